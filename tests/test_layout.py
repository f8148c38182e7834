"""The test tree keeps its shape: no test module imports another test module or conftest, and every directory
of tests is a package.

A function or constant one test module borrows from another ties the two together (moving or renaming the lender
breaks the borrower, and running one file runs the other's imports); what is shared lives in tests/support.py,
the doubles in tests/doubles/, and fixtures come from conftest.py by name. Imports are read with `ast`, not run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def is_test_module(dotted: str) -> bool:
    """`tests.x.test_y` or `tests.x.conftest`: a module no other module may import."""
    parts = dotted.split(".")
    return parts[0] == "tests" and (parts[-1].startswith("test_") or parts[-1] == "conftest")


def lender(dotted: str) -> str | None:
    """The test module (or conftest) an imported module or name belongs to, if any: for
    `tests.conftest.create_database`, `tests.conftest`."""
    parts = dotted.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if is_test_module(".".join(parts[:n]))),
                None)


def module_name(path: Path) -> str:
    """The dotted name of a file under the repository, as `tests.daemon.core.test_policy`."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every module `path` imports, as (line, dotted name): `import a.b` gives a.b, `from a import b` gives a
    and a.b (b may be a submodule), relative imports resolved against the file's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield node.lineno, source
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def python_files() -> list[Path]:
    """Every Python file of the tests and of the benchmarks (which import the same doubles and support)."""
    return sorted([*TESTS.rglob("*.py"), *(REPO / "bench").glob("*.py")])


def test_is_test_module_knows_test_modules_and_conftest_from_support_and_doubles() -> None:
    assert is_test_module("tests.daemon.core.test_risk")
    assert is_test_module("tests.conftest")
    assert not is_test_module("tests.support")
    assert not is_test_module("tests.doubles.heroku")
    assert not is_test_module("daemon.core.risk")


def test_module_lending_finds_the_test_module_behind_an_imported_name() -> None:
    assert lender("tests.conftest.create_database") == "tests.conftest"
    assert lender("tests.actions.drill.test_drill.capture") == "tests.actions.drill.test_drill"
    assert lender("tests.support.FakeClock") is None
    assert lender("tests.doubles.heroku.HerokuDouble") is None


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    borrowed = set()
    for path in python_files():
        for line, dotted in imported_modules(path):
            owner = lender(dotted)
            if owner is not None and owner != module_name(path):
                borrowed.add(f"{path.relative_to(REPO)}:{line} imports {owner}")
    assert not borrowed, ("test modules import from other test modules or conftest; move what they share to "
                          "tests/support.py:\n" + "\n".join(sorted(borrowed)))


def test_every_directory_of_tests_is_a_package() -> None:
    """With an __init__.py each, two test modules may share a basename in different directories."""
    dirs = {p.parent for p in TESTS.rglob("*.py")}
    missing = sorted(str(d.relative_to(REPO)) for d in dirs if not (d / "__init__.py").exists())
    assert not missing, f"directories of tests without __init__.py: {missing}"
