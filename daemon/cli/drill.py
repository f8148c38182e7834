"""`backup-guardian drill [--database X] [--scenario full|table]`: a drill now, with progress on a terminal."""

from __future__ import annotations

import sys

from actions.drill.outcome import FULL, SCENARIOS
from daemon.app import Guardian
from daemon.cli.exits import CRITICAL, OK, WARNING, worst
from daemon.cli.terminal import ProgressBar
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError


def run(config: GuardianConfig, database: str | None, scenario: str) -> int:
    guardian = Guardian(config)
    try:
        names = [database] if database else list(guardian.databases)
        unknown = [n for n in names if n not in guardian.databases]
        if unknown:
            raise GuardianError(f"unknown database {unknown[0]!r}; known: {', '.join(guardian.databases)}")
        guardian.collect_all(one_shot=True)
        guardian.drills.sweep_scratch(manual=True)
        verdict_code = OK
        for name in names:
            bar = ProgressBar()
            try:
                result = guardian.drills.drill(name, SCENARIOS.get(scenario, FULL), bar, manual=True)
            finally:
                bar.done()  # also on Ctrl-C: the live display ends and the cursor comes back
            if result.skipped:
                sys.stdout.write(f"{name}: {result.scenario} drill skipped: {result.reason}\n")
                verdict_code = worst(verdict_code, WARNING)
                continue
            verdict = "succeeded" if result.succeeded else "FAILED"
            rto = f" (RTO {result.rto_seconds:.0f}s)" if result.rto_seconds else ""
            sys.stdout.write(f"{name}: {result.scenario} drill {verdict} in {result.recovery_seconds:.1f}s{rto}: "
                             f"{result.reason}\n")
            for check in result.checks:
                sys.stdout.write(f"  {'ok    ' if check.ok else 'FAILED'} {check.name}: {check.detail}\n")
            report = guardian.holder.current().databases[name].drills[-1].report
            sys.stdout.write(f"  report: {report}\n")
            verdict_code = worst(verdict_code, OK if result.succeeded else CRITICAL)
        return verdict_code
    finally:
        guardian.stop()
