"""Pure evaluation of one database against its objectives. No I/O, no clock: `now` is an argument.

Checks (each yields a `Finding`, active or not, so every check has a value in the metrics):
  rpo_breach           critical  data at risk (now - the newest recovery point: the newest good backup's, or an
                                 Advanced database's rollback latest time when later) > RPO + tolerance (the
                                 schedule's normal start jitter and capture time, learned, bounded; 0 without a
                                 schedule), or no recovery point at all (unknown, not a breach, while a source
                                 that may hold one was never read)
  rpo_at_risk          warning   with a schedule: the next expected good backup (next due time plus the usual
                                 start delay) would come too late for the RPO, or the schedule was missed;
                                 without one: data at risk >= rpo_at_risk_ratio * RPO (and not yet breached)
  rpo_unachievable     warning   every schedule's interval + start jitter + capture time exceeds the RPO: it
                                 cannot be met by construction (one finding that stays open, never a page)
  last_attempt_failed  critical  the newest backup attempt of any source failed
  size_anomaly         warning   newest good backup < size_anomaly_ratio * median of the previous ones
  collector_down       warning   a collector for this database failed its last run, or has not succeeded
                                 within its expected interval (its facts are stale)
  missed_schedule      critical  a schedule's time (in its own timezone) passed by more than the grace and no
                                 backup started since (fires hours before an RPO breach); never for the Heroku
                                 source of an Advanced database (pg:backups is not established there)
  no_schedule          warning   no source has any backup schedule (an Essential plan too: pg:backups is its only
                                 protection); never for an Advanced database watched only through Heroku
  continuous_protection_off  warning  the plan offers continuous protection (PITR) but it is off; for Advanced
                                 also when it is on but rollback reports no latest point; never for Essential
  archive_gap          warning   a tier's newest copy is older than its cadence plus grace
  copy_lag             warning   the provider's newest good backup is not archived `copy_grace` after it finished
  unencrypted_object   critical  an archived copy has no server-side encryption
  bucket_posture       warning   versioning, default encryption, public access block or lifecycle missing
  retention            warning   a month of the last twelve (since the archive began) has no monthly copy
  unreadable_backup    critical  the newest good backup failed the readability check (pg_restore --list and a
                                 full read): it would not restore
  scratch_leftover     warning   a scratch database of this database's drills is still on the ledger: the sweep
                                 could not reach its server or prove it (it is kept, never guessed at)
  client_tools_too_old warning   the backups come from a newer PostgreSQL major than this pg_restore reads (the
                                 server's version, or the pg_dump that wrote the newest good backup): checks and
                                 drills cannot run here; a backup it cannot read is not called unreadable
  heroku_token_expiring warning  the Heroku API token expires within `heroku.token_warn_before` (critical once
                                 expired); unknown, not active, when its authorization cannot be read
                                 (`token`; added by the evaluation to Heroku databases only)
  compliance_export_overdue  warning  the last compliance export failed, or none succeeded within its cadence
                                 plus grace (only with a compliance section: `CompliancePolicy` given)

The archive checks apply only to databases with an archive (`ArchivePolicy` given).

`evaluate` runs every check; they live by subject: `rpo` (recovery point, schedules), `backups` (attempts,
sizes, readability, collectors), `archive`, `drills`, `tools` (the client programs); `findings` holds the
catalogue and what they share.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from daemon.config import Objectives
from daemon.core.policy.archive import TIER_CADENCE, ArchivePolicy, archive_checks, copy_lag_seconds
from daemon.core.policy.backups import (
    SIZE_HISTORY,
    collectors_check,
    last_attempt_check,
    size_anomaly_check,
    stale_since,
    unreadable_check,
)
from daemon.core.policy.compliance import CompliancePolicy, compliance_check
from daemon.core.policy.drills import DrillPolicy, drill_checks, scratch_leftover_check
from daemon.core.policy.findings import CHECKS, STANDING, data_at_risk_seconds, format_duration_s, newest_good_backup
from daemon.core.policy.rpo import (
    continuous_protection_check,
    missed_schedule_check,
    no_schedule_check,
    rpo_checks,
    unachievable_check,
)
from daemon.core.policy.tools import ClientTools, client_tools_check, major_of
from daemon.core.snapshot import CollectorStatus, DatabaseState, Finding

__all__ = ["CHECKS", "SIZE_HISTORY", "STANDING", "TIER_CADENCE", "ArchivePolicy", "ClientTools", "CompliancePolicy",
           "DrillPolicy",
           "copy_lag_seconds", "data_at_risk_seconds", "evaluate", "format_duration_s", "is_healthy", "major_of",
           "newest_good_backup", "stale_since"]


def evaluate(
    db: DatabaseState, objectives: Objectives, collectors: Iterable[CollectorStatus], now: datetime,
    archive: ArchivePolicy | None = None, drills: DrillPolicy | None = None, tools: ClientTools | None = None,
    compliance: CompliancePolicy | None = None,
) -> tuple[Finding, ...]:
    """All findings for one database at `now`. `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    missed = missed_schedule_check(db, objectives.schedule_grace.total_seconds(), now)
    findings = [
        *rpo_checks(db, objectives, missed.active, now),
        unachievable_check(db, objectives, now),
        last_attempt_check(db, now),
        size_anomaly_check(db, objectives, now),
        collectors_check(db, collectors, now),
        missed,
        no_schedule_check(db, now),
        continuous_protection_check(db, now),
        *archive_checks(db, archive, now),
        unreadable_check(db, now),
        *drill_checks(db, drills, now),
        scratch_leftover_check(db, now),
        client_tools_check(db, tools, now),
        compliance_check(db, compliance, now),
    ]
    return tuple(findings)


def is_healthy(findings: Iterable[Finding]) -> bool:
    """True when no critical finding is active and every collector is up (what `check`'s exit code means:
    a database the guardian cannot read is a failure, whatever its backups say)."""
    return not any(f.active and (f.severity == "critical" or f.check == "collector_down") for f in findings)
