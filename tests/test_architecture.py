"""The architecture as properties of the code, beside the import contracts `lint-imports` checks
(pyproject.toml): no module imports itself back through others, no code outside actions/ writes to or deletes
from an outside system, and a command builds only the parts it uses."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

from daemon.app import Guardian
from daemon.cli.archive import _list
from daemon.config import GuardianConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "collectors", "actions")
#: Adapter methods that write to, delete from or start something in an outside system.
WRITES = {"begin", "commit", "record_failure", "delete", "sweep_partials", "set_tier", "put_blob",  # archive
          "delete_export", "put_file",
          "capture", "update_formation", "rollback"}  # Heroku: a backup, a dyno formation, a release
#: The composition root's parts that live in actions/: a call on one of them is a delegation into actions.
ACTION_PARTS = {"captures", "deletions", "mirrors", "drills", "remedies", "scaling"}


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_module_imports_itself_back_through_others() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False)  # a TYPE_CHECKING cycle counts too
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="c", imported="a")
    assert cycles(graph) == [["a", "b"]]


def writes_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES
            and not (isinstance(node.func.value, ast.Attribute) and node.func.value.attr in ACTION_PARTS)]


def test_no_code_outside_actions_writes_to_an_outside_system() -> None:
    """Every change to the world goes through actions/ (the pipeline's guards, lock and audit): the shell,
    the core and the collectors never call an adapter's write or delete method. The adapters define them."""
    outside = [p for pkg in ("daemon", "collectors") for p in sorted((ROOT / pkg).rglob("*.py"))
               if "adapters" not in p.relative_to(ROOT).parts]
    assert outside, "no module found"
    assert [w for p in outside for w in writes_in(p)] == []


def test_the_write_finder_finds_a_write(tmp_path: Path) -> None:
    sneaky = ROOT / "collectors" / "_probe_for_test.py"
    sneaky.write_text("def f(store):\n    store.delete('db', 'b1')\n", encoding="utf-8")
    try:
        assert writes_in(sneaky) == ["collectors/_probe_for_test.py:2 .delete()"]
    finally:
        sneaky.unlink()


@pytest.fixture
def config(tmp_path: Path) -> GuardianConfig:
    (tmp_path / "archive").mkdir()
    return GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")},
        "sentry": {"dsn": "https://public@127.0.0.1:9/1"},  # never reached: the notifier is not built
        "databases": [{"name": "shop", "url": "postgresql://guardian@127.0.0.1:9/shop"},
                      {"name": "billing", "heroku": {"app": "billing-app"}}],
        "heroku": {"api_key": "never-used"}})


def test_a_command_builds_only_the_parts_it_uses(config: GuardianConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """`archive list` reads the archive store: no collection pool, Sentry, Heroku client, remedies or scheduler."""
    g = Guardian(config, quiet=True)
    try:
        assert _list(g, ["shop"]) == 0
        built = set(vars(g))
    finally:
        g.stop()
    assert "shop" in capsys.readouterr().out
    assert "store" in built
    assert not built & {"collection", "notifier", "heroku_api", "heroku", "remedies", "runtime", "drills",
                        "mirrors", "captures", "state"}


def test_a_started_guardian_builds_no_part_later(config: GuardianConfig) -> None:
    """`start()` builds every part the jobs and requests use before any of them runs, so no part is first built
    from a job's thread (two jobs at once would build two) or during the shutdown."""
    g = Guardian(config, quiet=True)
    try:
        g.start(serve_http=False)
        built = set(vars(g))
        g.collect_all()
        g.drills.sweep_scratch(manual=True)
        g.mirrors.pending()
        g.readthrough.check()
        g.prune()
        assert set(vars(g)) == built
    finally:
        g.stop()
    assert set(vars(g)) == built
