"""The compliance_export_overdue check as a table: cadence plus grace from the newest good export (or from when
the export was configured), and the last export's failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.core.policy import CompliancePolicy, evaluate
from tests.daemon.core.test_policy import database, objectives

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
D = timedelta(days=1)
MONTH, GRACE = 31 * D, 7 * D


def check(policy: CompliancePolicy | None) -> tuple[bool, str]:
    found = {f.check: f for f in evaluate(database(), objectives(), [], NOW, compliance=policy)}
    f = found["compliance_export_overdue"]
    assert f.severity == "warning"
    return f.active, f.hint


@pytest.mark.parametrize(("policy", "active", "says"), [
    (None, False, "no compliance export is configured"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 10 * D), False, "on schedule"),  # no chance yet
    (CompliancePolicy(MONTH, GRACE, since=NOW - 39 * D), True, "never succeeded"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * D, last_at=NOW - 30 * D, last_ok=True,
                      last_good_at=NOW - 30 * D), False, "on schedule"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * D, last_at=NOW - 37 * D, last_ok=True,
                      last_good_at=NOW - 37 * D), False, "on schedule"),  # inside the grace
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * D, last_at=NOW - 38 * D - timedelta(hours=1),
                      last_ok=True, last_good_at=NOW - 38 * D - timedelta(hours=1)),
     True, "last success 913h ago (every 31d)"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * D, last_at=NOW - D, last_ok=False,
                      last_reason="table public.audit_logs is not in the backup", last_good_at=NOW - 20 * D),
     True, "failed: table public.audit_logs is not in the backup"),
])
def test_compliance_export_overdue_or_failed(policy: CompliancePolicy | None, active: bool, says: str) -> None:
    got_active, hint = check(policy)
    assert got_active is active, hint
    assert says in hint
