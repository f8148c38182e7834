"""Every change to the world takes one path: the guards its kind declares, the execution, the audit record.

First the declarations through the real gate (every kind stops when paused, declines on a follower unless a
person asked in this process, only audits in dry run where it has a dry-run switch), and the README table
against them; then the real guardian, paused and as a follower, with a real PostgreSQL, pg_dump, a restore
drill's scratch server, the Heroku double and S3 on moto.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actions.audit import person
from actions.guards import WAITING_PROVIDER, Facts, Intent
from actions.pipeline import DRY_RUN, GUARDS, KINDS, LEADER, PAUSE_KEY, PROVIDER, ActionKind, Gate, Switches
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.status import status_document
from tests.doubles.heroku import HerokuDouble
from tests.doubles.s3 import MotoServer
from tests.support import REPO, an_hour_old_backup, guardian_for
from tests.support import S3_MIRROR_TOKEN as TOKEN

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def gate(paused: str | None = None, leader: bool = True, dry_run: bool = False, enabled: bool = True) -> Gate:
    return Gate(Switches(enabled=lambda: enabled, paused=lambda: paused, leader=lambda: leader,
                         dry_run=lambda _kind: dry_run), lambda: NOW)


def intent(kind: ActionKind, manual: bool = False) -> Intent:
    return Intent(kind.name, "shop", "a reason", manual=manual)


def label(kind: ActionKind) -> str:
    return f"{kind.name}: {kind.does}"


@pytest.mark.parametrize("kind", KINDS, ids=label)
def test_every_kind_stops_when_paused_and_goes_when_not(kind: ActionKind) -> None:
    decision = gate(paused="restoring by hand").decide(kind, intent(kind))
    assert decision.outcome == "skipped_paused" and "actions are paused: restoring by hand" in decision.reason
    assert gate().decide(kind, intent(kind)).go


@pytest.mark.parametrize("kind", KINDS, ids=label)
def test_every_kind_declines_on_a_follower_unless_a_person_asked_in_this_process(kind: ActionKind) -> None:
    follower = gate(leader=False)
    expected = "execute" if not kind.applies(LEADER) else "skipped_not_leader"
    assert follower.decide(kind, intent(kind)).outcome == expected
    if kind.applies(LEADER):  # a person's request in this process: only kinds a person can ask for pass
        assert follower.decide(kind, intent(kind, manual=True)).go


@pytest.mark.parametrize("kind", KINDS, ids=label)
def test_in_dry_run_a_kind_with_a_dry_run_switch_only_says_what_it_would_do(kind: ActionKind) -> None:
    decision = gate(dry_run=True).decide(kind, intent(kind))
    if kind.applies(DRY_RUN):
        assert decision.outcome == "dry_run" and decision.reason.startswith("dry run: would ")
        assert kind.dry_run_switch
    else:
        assert decision.go and kind.exempt[DRY_RUN]  # exempt, with its reason


@pytest.mark.parametrize("kind", KINDS, ids=label)
def test_a_kind_waits_for_heroku_where_it_declares_the_provider_guard_and_only_for_targets_on_heroku(
    kind: ActionKind
) -> None:
    """Waiting comes before the cooldown and the cap (a decline is no execution: it starts no cooldown and
    spends no cap), and a target not on Heroku never waits."""
    text = "Heroku reports an incident on Data: Postgres errors"
    waiting = Gate(Switches(enabled=lambda: True, paused=lambda: None, leader=lambda: True,
                            dry_run=lambda _kind: False, provider_incident=lambda: text), lambda: NOW)
    busy = Facts(dry_run=False, on_heroku=True, last_taken=NOW, cooldown=timedelta(hours=2), taken_24h=1,
                 daily_cap=1)
    decision = waiting.decide(kind, intent(kind), base=busy)
    if kind.applies(PROVIDER):
        assert decision.outcome == WAITING_PROVIDER and decision.reason.startswith(f"waiting: {text} (wanted to ")
    else:
        assert decision.outcome != WAITING_PROVIDER and kind.exempt[PROVIDER]
    assert waiting.decide(kind, intent(kind), base=Facts(dry_run=False, on_heroku=False, daily_cap=9)).go
    assert gate().decide(kind, intent(kind), base=Facts(dry_run=False, on_heroku=True, daily_cap=9)).go


def test_the_readme_table_is_the_declaration() -> None:
    """README "Safety": one row per kind, one column per guard, `yes` or the reason it does not apply."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    header = "| action | " + " | ".join(GUARDS) + " |"
    assert header in text, "the README's action x guard table header is missing or out of date"
    rows = text.split(header, 1)[1].strip().splitlines()[1:1 + len(KINDS)]
    for kind, row in zip(KINDS, rows, strict=True):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[0] == kind.does.replace("|", "/"), row
        for guard, cell in zip(GUARDS, cells[1:], strict=True):
            want = "yes" if kind.applies(guard) else f"no: {kind.exempt[guard]}"
            if guard == DRY_RUN and kind.applies(guard):
                want = f"yes (`{kind.dry_run_switch}`)"
            assert cell == want, f"{kind.does} / {guard}: README says {cell!r}, the code {want!r}"


def test_the_declines_remembered_against_repeats_stay_bounded(tmp_path: Path) -> None:
    """A decline is audited once per change (not at every pass); what is remembered for that is forgotten once
    older than the repeat interval, so targets that come and go (a mirror's "db/backup id") never pile up."""
    from actions import runner as runner_module
    from actions.audit import AuditLog
    from actions.guards import Decision
    from actions.runner import REPEAT_AFTER, ActionRunner
    from daemon.adapters.statestore import open_state_store

    now = [NOW]
    store = open_state_store(None, tmp_path / "state")
    try:
        runner = ActionRunner(store, AuditLog(store, lambda: now[0]), lambda _a, _o: None, lambda: now[0])
        limit = runner_module.SAID_LIMIT
        for n in range(limit):
            runner.note(Decision(Intent("mirror", f"shop/b{n:06}", "new backup"), "skipped_paused", "paused"))
        runner.note(Decision(Intent("mirror", "shop/b000000", "new backup"), "skipped_paused", "paused"))
        assert len(store.audit(action="mirror", limit=limit + 10)) == limit  # the repeat was not audited again
        now[0] += REPEAT_AFTER
        runner.note(Decision(Intent("mirror", "shop/new", "new backup"), "skipped_paused", "paused"))
        assert len(runner._said) == 1  # the old ones were forgotten when the limit was reached
    finally:
        store.close()


# -- the real guardian ----------------------------------------------------------------------------------------

def _guardian(tmp: Path, url: str, scratch: str) -> Guardian:
    return Guardian(GuardianConfig.model_validate({
        "state_dir": str(tmp / "state"), "archive": {"path": str(tmp / "archive")},
        "databases": [{"name": "shop", "url": url, "capture": {"interval": "1h"},
                       "drill": {"scratch_url": scratch}}]}))


def _scratch_databases(cluster: LocalCluster) -> set[str]:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database") if r[0].startswith("guardian_")}


def _archived(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "archive").rglob("*.json"))


def test_a_paused_guardian_neither_captures_nor_drills_nor_sweeps(fresh_db: str, own_cluster: LocalCluster,
                                                                   open_tmp: Path) -> None:
    g = _guardian(open_tmp, fresh_db, own_cluster.url("postgres"))
    try:
        assert g.captures.capture("shop")[0]  # not paused: a capture lands, a drill restores it
        assert g.drills.drill("shop").succeeded
        before, drills = _archived(open_tmp), len(g.state.drills("shop"))

        g.state.put(PAUSE_KEY, {"paused": True, "reason": "restoring by hand"})
        ok, detail = g.captures.capture("shop")
        run = g.drills.drill("shop")
        g.drills.sweep_scratch()
        asked = g.remedies.request_capture("shop", "before the restore")  # a person's request: paused too
        records = g.audit.read()
        audit = [(a["action"], a["outcome"], a["reason"]) for a in records if a["outcome"] == "skipped_paused"]
        shown = status_document(g.holder.current(), datetime.now(UTC))["databases"][0]["decisions"]
    finally:
        g.stop()
    # every audited decision reaches the status page, newest first (the page shows five)
    mine = [(a["action"], a["outcome"]) for a in reversed(records) if a["target"] == "shop"]
    assert [(d["action"], d["outcome"]) for d in shown] == mine[:5]
    assert shown[0]["outcome"] == "skipped_paused" and "restoring by hand" in shown[0]["reason"]
    assert all(d["action"] != "scratch_sweep" for d in shown)  # about the scratch servers, not this database
    assert not ok and "actions are paused: restoring by hand" in detail
    assert run.skipped and "actions are paused: restoring by hand" in run.reason
    assert _archived(open_tmp) == before and not _scratch_databases(own_cluster)
    assert [(a, o) for a, o, _ in audit] == [("capture", "skipped_paused"), ("drill", "skipped_paused"),
                                            ("scratch_sweep", "skipped_paused"), ("capture", "skipped_paused")]
    assert asked.outcome == "skipped_paused" and records[-1]["requested_by"] == person()
    assert all("restoring by hand" in r for _, _, r in audit)
    g = _guardian(open_tmp, fresh_db, own_cluster.url("postgres"))
    try:
        assert len(g.state.drills("shop")) == drills  # no drill was recorded either
        again = status_document(g.collect_all(), datetime.now(UTC))["databases"][0]["decisions"]
        assert again == shown  # a restart shows the same decisions, read back from the state store
    finally:
        g.stop()


def test_a_follower_changes_nothing_and_leaves_the_record_to_the_leader(fresh_db: str, own_cluster: LocalCluster,
                                                                       open_tmp: Path) -> None:
    leader = _guardian(open_tmp, fresh_db, own_cluster.url("postgres"))
    follower = _guardian(open_tmp, fresh_db, own_cluster.url("postgres"))  # the same state store: a replica
    try:
        assert leader.leadership.elect() and not follower.leadership.elect()
        ok, detail = follower.captures.capture("shop")
        run = follower.drills.drill("shop")
        follower.drills.sweep_scratch()
        audit: list[dict[str, Any]] = follower.audit.read()
    finally:
        follower.stop()
        leader.stop()
    assert not ok and "not the leader" in detail
    assert run.skipped and "not the leader" in run.reason
    assert _archived(open_tmp) == [] and not _scratch_databases(own_cluster)
    assert audit == []  # a follower's declines are logged, not audited


def test_a_paused_guardian_mirrors_nothing(heroku: HerokuDouble, moto_server: MotoServer, s3_bucket: tuple[Any, str],
                                           tmp_path: Path) -> None:
    client, bucket = s3_bucket
    an_hour_old_backup(heroku)
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)
    try:
        g.collect_all(one_shot=True)
        g.state.put(PAUSE_KEY, {"paused": True, "reason": "bucket migration"})
        assert g.mirrors.pending() == 0
        mirror = [(a["outcome"], a["reason"]) for a in g.audit.read() if a["action"] == "mirror"]
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        g.state.put(PAUSE_KEY, {"paused": False})
        assert g.mirrors.pending() == 1  # resumed: the copy is made, through the same path
        after = [a["outcome"] for a in g.audit.read() if a["action"] == "mirror"]
    finally:
        g.stop()
    assert len(mirror) == 1 and mirror[0][0] == "skipped_paused" and "bucket migration" in mirror[0][1]
    assert after == ["skipped_paused", "started", "done"]
    assert re.search(r"^\w", mirror[0][1])


# -- actions as data ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS, ids=label)
def test_an_intent_is_plain_data_that_survives_json(kind: ActionKind) -> None:
    import json

    original = Intent(kind.name, "shop", "why", triggers=("rpo_at_risk",), params={"kind": "manual", "n": 2},
                      manual=True, requested_by="ops@host")
    again = Intent.from_json(json.loads(json.dumps(original.to_json())))
    assert again == original
    assert gate().decide(kind, again).outcome == gate().decide(kind, original).outcome


@pytest.mark.parametrize(("doc", "field"), [
    ({"target": "shop", "reason": "r"}, "'action'"),
    ({"action": "capture", "target": "", "reason": "r"}, "'target'"),
    ({"action": "capture", "target": "shop", "reason": "r", "triggers": "rpo"}, "'triggers'"),
    ({"action": "capture", "target": "shop", "reason": "r", "params": []}, "'params'"),
    ({"action": "capture", "target": "shop", "reason": "r", "manual": "yes"}, "'manual'"),
    ({"action": "capture", "target": "shop", "reason": "r", "requested_by": 7}, "'requested_by'"),
    ([], "object"),
])
def test_a_malformed_intent_is_refused_naming_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Intent.from_json(doc)
