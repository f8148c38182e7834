"""The recent remedial decisions per database that the status page lists (daemon.control.ControlPanel.noted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.config import ActionsConfig
from daemon.control import DECISIONS_KEPT, ControlPanel
from daemon.core.snapshot import StateHolder

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def record(minutes: int, target: str, action: str = "capture", outcome: str = "dry_run") -> dict[str, Any]:
    return {"time": (T0 + timedelta(minutes=minutes)).isoformat(), "action": action, "target": target,
            "outcome": outcome, "reason": f"{action} {target} at +{minutes}m"}


def panel(*names: str) -> ControlPanel:
    return ControlPanel(StateHolder(), ActionsConfig(), lambda: None, lambda: True, dict, names)


def test_each_decision_goes_to_the_database_it_is_about_the_longest_name_first() -> None:
    control = panel("shop", "shop/DATABASE", "shopx")
    control.noted([record(1, "shop"), record(2, "shop/DATABASE"), record(3, "shop/DATABASE/a001", "mirror"),
                   record(4, "shop/b0007", "prune"), record(5, "shopx"), record(6, "scratch servers", "scratch_sweep"),
                   record(7, "shop-old")])
    got = {name: [d.target for d in ds] for name, ds in control.holder.current().control.decisions.items()}
    assert got == {"shop": ["shop", "shop/b0007"], "shop/DATABASE": ["shop/DATABASE", "shop/DATABASE/a001"],
                   "shopx": ["shopx"]}


def test_reading_the_same_records_again_adds_nothing_and_publishes_nothing() -> None:
    control = panel("shop")
    control.noted([record(1, "shop"), record(2, "shop")])
    version = control.holder.current().version
    control.noted([record(2, "shop"), record(1, "shop")])  # the state store's newest, read back
    assert control.holder.current().version == version
    assert len(control.holder.current().control.decisions["shop"]) == 2


def test_one_busy_database_never_pushes_another_ones_decisions_out() -> None:
    control = panel("busy", "quiet")
    control.noted([record(0, "quiet", outcome="done")])
    control.noted([record(i, "busy") for i in range(1, 500)])
    decisions = control.holder.current().control.decisions
    assert [d.outcome for d in decisions["quiet"]] == ["done"]
    assert len(decisions["busy"]) == DECISIONS_KEPT
    assert decisions["busy"][-1].reason == "capture busy at +499m"  # the newest kept, oldest first
