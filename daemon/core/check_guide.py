"""What a person reads about each check of the policy: a plain title, what to do first, and its runbook.

Served with every finding in the status document (so the JSON API and the status page say the same thing) and
used for the titles of notifications (daemon.adapters.notify).
Every check in `daemon.core.policy.CHECKS` has a title and a first step (a test holds this); a runbook link
exists for the checks that have a file in docs/runbooks/ (the ones the alert rules page or ticket on).
"""

from __future__ import annotations

#: Where the alert rules link the runbooks (alerts/pgbackup.rules.yml uses the same base).
RUNBOOK_BASE = "https://github.com/pg-backup-guardian/pg-backup-guardian/blob/main/docs/runbooks/"

TITLES: dict[str, str] = {
    "rpo_breach": "Data at risk is past the RPO",
    "rpo_at_risk": "The next backup will come too late for the RPO",
    "rpo_unachievable": "The backup schedule cannot meet the RPO",
    "last_attempt_failed": "The last backup attempt failed",
    "size_anomaly": "The newest backup is much smaller than usual",
    "collector_down": "The guardian cannot read this database's facts",
    "missed_schedule": "A scheduled backup did not start",
    "no_schedule": "No backup schedule is configured",
    "continuous_protection_off": "Point-in-time recovery is off",
    "archive_gap": "The external archive is behind",
    "copy_lag": "The newest backup is not archived yet",
    "unencrypted_object": "An archived copy is not encrypted",
    "bucket_posture": "The archive bucket lacks a safeguard",
    "retention": "A month has no monthly archive copy",
    "unreadable_backup": "The newest backup would not restore",
    "drill_failed": "The last restore drill failed",
    "drill_overdue": "A restore drill is overdue",
    "recovery_time_over_rto": "Recovery took longer than the RTO",
    "scratch_leftover": "A drill's scratch database was not dropped",
    "client_tools_too_old": "This machine's pg_restore cannot read the backups",
    "heroku_token_expiring": "The Heroku API token expires soon",
    "compliance_export_overdue": "The compliance export is overdue or failed",
}

FIRST_STEPS: dict[str, str] = {
    "rpo_breach": "Take a backup now (backup-guardian capture), then find out why the scheduled ones stopped.",
    "rpo_at_risk": "Take a manual backup now so the RPO holds, then check the schedule.",
    "rpo_unachievable": "Shorten the backup interval or loosen the RPO so the two agree.",
    "last_attempt_failed": "Read the failed attempt's error in this database's backup history; retry once it is fixed.",
    "size_anomaly": "Check whether data was deleted before trusting this backup; keep the older ones.",
    "collector_down": "Read the collector's last error and restore the guardian's access.",
    "missed_schedule": "Check the provider's backup schedule and take a backup by hand now.",
    "no_schedule": "Schedule daily backups (heroku pg:backups:schedule or capture.interval).",
    "continuous_protection_off": "Turn continuous protection on with the provider, or accept the RPO of dumps.",
    "archive_gap": "Run backup-guardian archive mirror and read its error if it fails.",
    "copy_lag": "Run backup-guardian archive mirror for this database.",
    "unencrypted_object": "Re-encrypt or replace the object, then turn on the bucket's default encryption.",
    "bucket_posture": "Turn on versioning, default encryption and the public access block on the bucket.",
    "retention": "Copy a backup of the missing month into the monthly tier if one still exists.",
    "unreadable_backup": "Do not rely on this backup: take a new one and verify it restores.",
    "drill_failed": "Read the drill report, fix the cause, and run the drill again.",
    "drill_overdue": "Run a restore drill now (backup-guardian drill).",
    "recovery_time_over_rto": "Find the slow phase in the drill report, or revise the RTO with the business.",
    "scratch_leftover": "Drop the scratch database by hand after checking it is not production.",
    "client_tools_too_old": "Install the client tools of the server's PostgreSQL major (or set GUARDIAN_PG_BINDIR).",
    "heroku_token_expiring": "Create a long-lived token (heroku authorizations:create) and set HEROKU_API_KEY to it.",
    "compliance_export_overdue": "Read the last export's reason in the audit log (backup-guardian actions "
                                 "--action compliance_export), fix it, then run backup-guardian "
                                 "compliance-export --database X.",
}

#: check -> its runbook file in docs/runbooks/ (checks without one are left out).
RUNBOOKS: dict[str, str] = {
    "rpo_breach": "pg_backup_rpo_breach.md",
    "rpo_at_risk": "pg_backup_rpo_at_risk.md",
    "rpo_unachievable": "pg_backup_rpo_unachievable.md",
    "last_attempt_failed": "pg_backup_last_attempt_failed.md",
    "size_anomaly": "pg_backup_size_anomaly.md",
    "collector_down": "pg_backup_collector_down.md",
    "missed_schedule": "pg_backup_missed_schedule.md",
    "archive_gap": "pg_backup_archive_gap.md",
    "copy_lag": "pg_backup_copy_lag.md",
    "unencrypted_object": "pg_backup_unencrypted_archive_object.md",
    "unreadable_backup": "pg_backup_unreadable_backup.md",
    "drill_failed": "pg_backup_drill_failed.md",
    "drill_overdue": "pg_backup_drill_overdue.md",
    "recovery_time_over_rto": "pg_backup_recovery_time_over_rto.md",
    "client_tools_too_old": "pg_backup_client_tools_too_old.md",
    "heroku_token_expiring": "pg_backup_heroku_token_expiring.md",
    "compliance_export_overdue": "pg_backup_compliance_export_overdue.md",
}


def title(check: str) -> str:
    """The plain title of `check`; an unknown check reads as its own name."""
    return TITLES.get(check, check.replace("_", " "))


def guide(check: str) -> dict[str, str | None]:
    """Title, first step and runbook URL of `check` (no advice for an unknown check)."""
    runbook = RUNBOOKS.get(check)
    return {"title": title(check), "first_step": FIRST_STEPS.get(check),
            "runbook_url": RUNBOOK_BASE + runbook if runbook else None}
