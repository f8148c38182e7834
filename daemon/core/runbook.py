"""The runbook of a recovery plan: the steps of the SuoOps backup and recovery procedures for the scenario, with
the exact commands for this database (its Heroku app and attachment, its archived dumps), what to check
afterwards, and the plan in words for a terminal.

Pure, like `daemon.core.recovery` (whose facts it reads). Point-in-time recovery on Heroku is a rollback into a
new database (`heroku addons:create heroku-postgresql:<plan> --app <app> -- --rollback <DB> --to '<time>'`,
then `pg:promote`): `pg:backups:restore` has no timestamp option (docs/heroku-api reference, section 5.1).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from datetime import datetime

from daemon.core.names import parse_table
from daemon.core.plans import ADVANCED
from daemon.core.policy import format_duration_s
from daemon.core.recovery import Candidate, PlanTarget, RecoveryPlan, Step, plan_facts
from daemon.core.snapshot import DatabaseState

#: Shown where the plan needs a moment the guardian cannot know (pass --before to fill it in).
DAMAGE_TIME = "<UTC time just before the damage>"
HEROKU_STATUS = "https://status.heroku.com"
HEROKU_STATUS_API = "https://status.heroku.com/api/v4/current-status"


def plan_recovery(db: DatabaseState, target: PlanTarget, scenario: str, now: datetime,
                  before: datetime | None = None, unread: tuple[str, ...] = ()) -> RecoveryPlan:
    """The whole plan: the facts (`daemon.core.recovery.plan_facts`, whose arguments these are) and the
    runbook's steps for them. Raises ValueError naming an unknown scenario."""
    plan = plan_facts(db, target, scenario, now, before, unread)
    return replace(plan, steps=tuple(steps(plan)), afterwards=tuple(afterwards(plan)))


# -- small pieces ------------------------------------------------------------------------------------------------

def _q(text: str) -> str:
    return shlex.quote(text)


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S+00:00")


def _damage(plan: RecoveryPlan) -> str:
    """The moment to roll back to or recover rows from: `--before`, or a placeholder to fill in."""
    return _when(plan.before) if plan.before is not None else DAMAGE_TIME


def _addon_plan(plan: str) -> str:
    """Heroku's plan as `addons:create` takes it: 'Standard 0' or 'heroku-postgresql:standard-0' -> 'standard-0'."""
    return re.sub(r"\s+", "-", plan.split(":", 1)[-1].strip().lower())


def recovery_database(name: str) -> str:
    """The name of the new database a copy is restored into (never the production one)."""
    return (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "guardian") + "_recovery"


def _heroku(target: PlanTarget, *words: str) -> str:
    return " ".join(["heroku", *words, "--app", _q(target.heroku_app or "")])


def rollback_command(plan: RecoveryPlan) -> str:
    """The provider rollback into a new database at the moment before the damage (the one place that says how
    a plan's rollback is run)."""
    assert plan.rollback is not None
    t = plan.target
    if plan.rollback.family == ADVANCED:  # Heroku Postgres Advanced: `data:pg:fork --rollback-to`, not addons:create
        return (f"heroku data:pg:fork {t.config_var} --rollback-to {_q(_damage(plan))} "
                f"--app {_q(t.heroku_app or '')}")
    return (f"heroku addons:create heroku-postgresql:{_addon_plan(plan.rollback.plan)} --app {_q(t.heroku_app or '')}"
            f" -- --rollback {t.config_var} --to {_q(_damage(plan))}")


def recover_rows_command(plan: RecoveryPlan, tables: tuple[str, ...]) -> str:
    """The one `recover-rows` run for every table of the deletion (one run, so rows that depend on each other
    across those tables are compared together), into a new directory."""
    return " ".join([f"backup-guardian recover-rows --database {_q(plan.database)}",
                     *(f"--table {_q(name)}" for name in tables),
                     f"--before {_q(_damage(plan))} --out {_q(recovery_database(plan.database) + '_rows')}"])


def _restore_elsewhere(plan: RecoveryPlan, c: Candidate, tables: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Fetch (from S3, or Heroku's own backup when the archive lacks it), verify and `pg_restore` a good backup
    into a new database (only `tables` when given)."""
    t, dbname = plan.target, recovery_database(plan.database)
    cmds = []
    if c.location is None:  # a Heroku backup: the CLI saves it as latest.dump (ref: pg:backups:download)
        dump = "latest.dump"
        cmds.append(_heroku(t, "pg:backups:download", _q(c.backup_id)))
    elif t.archive_kind == "s3":
        dump = f"{c.backup_id}.dump"
        endpoint = f" --endpoint-url {_q(t.s3_endpoint)}" if t.s3_endpoint else ""
        cmds.append(f"aws s3 cp {_q(c.location)} {_q(dump)}{endpoint}")
    else:
        dump = c.location
    if c.sha256:
        cmds.append(f"echo {_q(c.sha256 + '  ' + dump)} | sha256sum --check")
    cmds.append(f"createdb {dbname}")
    only = []
    for name in tables:
        table = parse_table(name)
        only += ["--schema", _q(table.schema), "--table", _q(table.name)]
    cmds.append(" ".join(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", *only,
                          "--dbname", dbname, _q(dump)]))
    return tuple(cmds)


def _archived(plan: RecoveryPlan) -> Candidate | None:
    """The newest good copy the guardian's archive holds (restorable anywhere, without the provider)."""
    return next((c for c in (plan.newest, *plan.fallbacks) if c is not None and c.location), None)


def _heroku_copy(plan: RecoveryPlan) -> Candidate | None:
    return next((c for c in (plan.newest, *plan.fallbacks) if c is not None and "heroku" in c.sources), None)


def _age(c: Candidate) -> str:
    return format_duration_s(c.data_loss_seconds)


# -- the steps, per scenario -------------------------------------------------------------------------------------

def steps(plan: RecoveryPlan) -> list[Step]:
    """The runbook's steps for the plan's scenario."""
    return {"corruption": _corruption, "deletion": _deletion, "failure": _failure,
            "outage": _outage}[plan.scenario.key](plan)


def _step(title: str, *commands: str, note: str = "") -> Step:
    return Step(title, tuple(commands), note)


def _advanced(plan: RecoveryPlan) -> bool:
    """Heroku Postgres Advanced: whether pg:backups serves it is not established, so no step relies on it."""
    return plan.provider_family == ADVANCED


def _capture_first(plan: RecoveryPlan) -> Step:
    t = plan.target
    if t.heroku_app and _advanced(plan):
        return _step("Keep the current state first (evidence, and a way back)",
                     note="pg:backups is not established for Heroku Postgres Advanced: the rollback window "
                          "keeps the moments before the damage; a fork (heroku data:pg:fork) keeps the current "
                          "state for inspection")
    if t.heroku_app:
        return _step("Capture the current state first (evidence, and a way back)",
                     _heroku(t, "pg:backups:capture", t.config_var))
    return _step("Capture the current state first (evidence, and a way back)",
                 f"backup-guardian capture --database {_q(plan.database)} --reason 'state before recovery'")


def _restore_steps(plan: RecoveryPlan, tables: tuple[str, ...] = ()) -> list[Step]:
    """Restore a good backup: Heroku's own in place (a whole database only), and a copy into a new database
    (the archived one, or for some tables the newest of any source)."""
    t, out = plan.target, []
    heroku = _heroku_copy(plan)
    alternative = "Or, without the rollback: " if plan.rollback is not None else ""
    if t.heroku_app and heroku is not None and not tables:
        fork_plan = _addon_plan(plan.provider_plan) if plan.provider_plan else "<plan>"
        out.append(_step(f"{alternative}restore Heroku backup {heroku.backup_id} into {t.config_var} (overwrites "
                         f"it; data loss now {_age(heroku)})",
                         _heroku(t, "pg:backups:info", _q(heroku.backup_id)),
                         _heroku(t, "pg:backups:restore", _q(heroku.backup_id), t.config_var)
                         + f" --confirm {_q(t.heroku_app)}",
                         note="to keep the damaged data for inspection, fork it first: "
                              f"heroku addons:create heroku-postgresql:{fork_plan} --app {_q(t.heroku_app)} -- "
                              f"--fork {t.config_var}"))
    copy = (plan.newest if tables else None) or _archived(plan)
    if copy is not None:
        what = "the critical tables of " if tables else ""
        lead = "Or restore" if out or alternative else "Restore"
        out.append(_step(f"{lead} {what}backup {copy.backup_id} into a new database (data loss now {_age(copy)})",
                         *([f"backup-guardian archive list --database {_q(plan.database)}"] if copy.location else []),
                         *_restore_elsewhere(plan, copy, tables),
                         note="then copy the rows back" if tables else
                         "then point the application at the new database once it is checked"))
    if not out:
        out.append(_step("No good backup to restore from", note="see the warnings above"))
    return out


def _rollback_steps(plan: RecoveryPlan, purpose: str) -> list[Step]:
    if plan.rollback is None:
        return []
    t, w = plan.target, plan.rollback
    return [_step(f"Roll back into a new database ({purpose}); reachable: {_when(w.earliest)} to {_when(w.latest)}",
                  rollback_command(plan), _heroku(t, "pg:wait"), _heroku(t, "pg:info"),
                  note="Heroku's point-in-time recovery; the new database appears as HEROKU_POSTGRESQL_<COLOR>; "
                       "production is untouched until you promote it")]


def _corruption(plan: RecoveryPlan) -> list[Step]:
    t = plan.target
    out = [_capture_first(plan)]
    if t.heroku_app:
        out.append(_step("Assess the extent from the database's logs",
                         _heroku(t, "logs", "--tail", "--ps", "postgres")))
    out += _rollback_steps(plan, "to the moment before the corruption")
    if plan.rollback is not None:
        out.append(_step("Promote the rolled-back database once it is checked",
                         _heroku(t, "pg:promote", "HEROKU_POSTGRESQL_<COLOR>")))
    return out + _restore_steps(plan)


def _deletion(plan: RecoveryPlan) -> list[Step]:
    t = plan.target
    tables = t.tables or ("<table>",)
    out = [_step("Identify when the rows were deleted (application and database logs)",
                 *([_heroku(t, "logs", "--ps", "postgres")] if t.heroku_app else []),
                 note="pass --before '<that time>' to fill it into the commands below")]
    out += _rollback_steps(plan, "to the moment before the deletion; copy the rows back from it")
    if plan.newest is not None:
        out.append(_step("Recover the deleted rows from the newest good backup before that time",
                         recover_rows_command(plan, tables),
                         note="writes an SQL file and CSVs into the new directory; review them, then apply the "
                              "SQL file with psql (it never writes to production itself)"))
    else:
        out.append(_step("No good backup to recover the rows from",
                         note="copy them from the rolled-back database above, if there is one"))
    return out + _restore_steps(plan, t.tables) + [_step("Merge the extracted rows back, then verify integrity")]


def _failure(plan: RecoveryPlan) -> list[Step]:
    t = plan.target
    if t.heroku_app:
        out = [_step("Check Heroku's status", f"curl -s {HEROKU_STATUS_API}", note=HEROKU_STATUS),
               _step("Review recent deployments; roll back a bad one", _heroku(t, "releases"),
                     f"backup-guardian actions --action rollback --target {_q(t.heroku_app)}",
                     _heroku(t, "rollback", "v<N>"),
                     note="name the release to return to: `heroku rollback` without a version returns to the one "
                          "before the current, which after a rollback by the guardian is the bad deploy again"),
               _step("Scale up if resources are exhausted", _heroku(t, "ps:scale", "web=2"))]
    else:
        host = t.server or "<host>:<port>"
        h, _, p = host.rpartition(":")
        out = [_step("Check the database server answers", f"pg_isready --host {_q(h)} --port {_q(p)}")]
    out.append(_step("If the database is the cause: restore from the last known good backup"))
    return out + _rollback_steps(plan, "to the last good moment") + _restore_steps(plan)


def _outage(plan: RecoveryPlan) -> list[Step]:
    rto = format_duration_s(plan.rto_seconds) if plan.rto_seconds else "the RTO"
    out = [_step("Check the provider's status and its estimate", f"curl -s {HEROKU_STATUS_API}",
                 note=f"{HEROKU_STATUS}; if recovery is not promised well within {rto} of the outage's start, "
                      "restore elsewhere now")]
    archived = _archived(plan)
    if archived is None:
        out.append(_step("No copy outside the provider: wait for it", note="the archive holds no good copy"))
        return out
    out.append(_step(f"Restore the archived copy {archived.backup_id} on another PostgreSQL server (data loss now "
                     f"{_age(archived)})", f"backup-guardian archive list --database {_q(plan.database)}",
                     *_restore_elsewhere(plan, archived),
                     note="run these with PGHOST/PGPORT/PGUSER set to the new server; then set the app's "
                          "DATABASE_URL to it"))
    return out


def afterwards(plan: RecoveryPlan) -> list[str]:
    """What to check after the recovery (the procedures' verification, test checklist and post-incident review)."""
    out = ["The restored database has every table, with plausible row counts",
           "Critical flows work: user authentication, invoice creation, payment status updates, PDF generation, "
           "email notifications",
           f"A fresh backup is taken and `backup-guardian check` shows {plan.database} OK"]
    if plan.scenario.key == "deletion":
        out.insert(1, "The recovered rows are back and refer to existing rows (foreign keys hold)")
    if plan.target.heroku_app and _advanced(plan):
        out.append(f"heroku data:pg:info --app {_q(plan.target.heroku_app)} shows continuous protection on and a "
                   "rollback window for the new database")
    elif plan.target.heroku_app:
        out.append(f"heroku pg:backups --app {_q(plan.target.heroku_app)} lists the new database's backups and "
                   "its schedule (a promoted database needs its own)")
    out += ["Post-incident: document the timeline, identify the root cause, update the procedures, "
            "debrief the team within 48 hours, update monitoring and alerts"]
    return out


# -- the plan in words -------------------------------------------------------------------------------------------

#: What each drill rehearses, in the status page's words.
DRILL_WORDS = {"database_corruption": "full restore", "accidental_deletion": "table restore"}
VERDICT_WORDS = {"within": "WITHIN the RTO", "over": "OVER the RTO", "failed": "FAILED (recovery time unknown)",
                 "never_measured": "NEVER MEASURED"}


def plan_lines(plan: RecoveryPlan) -> list[tuple[str, str]]:
    """The plan as (style, text) lines: style is one of title, heading, ok, warning, critical, command, plain
    (a terminal colours them; plain output prints the text alone)."""
    sc, out = plan.scenario, []
    rto = format_duration_s(plan.rto_seconds) if plan.rto_seconds else "not set"
    out.append(("title", f"Recovery plan: {plan.database}, {sc.title.lower()} ({sc.procedure} of the procedures)"))
    out.append(("plain", f"as of {plan.generated_at:%Y-%m-%d %H:%M:%S} UTC; RTO {rto}, RPO "
                         f"{format_duration_s(plan.rpo_seconds)}"))
    out += [("critical", f"WARNING: {w}") for w in plan.warnings]
    out.append(("heading", "Restore from"))
    if plan.newest is None:
        out.append(("critical", "  no good backup"))
    for label, c in [("newest good", plan.newest), *(("fallback", f) for f in plan.fallbacks)]:
        if c is None:
            continue
        loss = c.data_loss_seconds
        style = "critical" if loss > plan.rpo_seconds else "plain"
        out.append((style, f"  {label:<11} {c.backup_id} ({', '.join(c.sources)}), recovery point "
                           f"{c.recovery_point:%Y-%m-%d %H:%M:%S} UTC, data loss now {format_duration_s(loss)}"))
        if c.location:
            out.append(("plain", f"              {c.location}"))
    if plan.rollback is not None:
        out.append(("ok", f"  rollback    {plan.rollback.plan}: any moment from {_when(plan.rollback.earliest)} to "
                          f"{_when(plan.rollback.latest)} (data loss: minutes)"))
    else:
        out.append(("plain", f"  rollback    none: {plan.rollback_reason}"))
    d = plan.drill
    out.append(("heading", "Recovery time"))
    verdict = VERDICT_WORDS[d.verdict]
    style = {"within": "ok", "over": "critical", "failed": "critical"}.get(d.verdict, "warning")
    kind = DRILL_WORDS.get(d.drill_scenario, d.drill_scenario.replace("_", " "))
    measured = (f"last {kind} drill {d.started_at:%Y-%m-%d} took {format_duration_s(d.measured_seconds)}"
                if d.started_at and d.measured_seconds is not None and d.verdict != "failed"
                else f"{kind} drill: {d.reason}")
    out.append((style, f"  {verdict}: {measured}; RTO {rto}"))
    out.append(("heading", "Steps"))
    for i, s in enumerate(plan.steps, 1):
        out.append(("plain", f"  {i}. {s.title}"))
        out += [("command", f"       $ {c}") for c in s.commands]
        if s.note:
            out.append(("plain", f"       ({s.note})"))
    out.append(("heading", "Afterwards, check"))
    out += [("plain", f"  [ ] {a}") for a in plan.afterwards]
    out.append(("heading", "Active findings"))
    if not plan.findings:
        out.append(("ok", "  none"))
    out += [("critical" if f.severity == "critical" else "warning", f"  {f.severity.upper():<8} {f.check}: {f.hint}")
            for f in plan.findings]
    return out
