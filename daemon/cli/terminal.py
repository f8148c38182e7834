"""What the command line prints: rich tables and progress bars on a terminal, plain aligned text otherwise.

A person at a terminal gets colours (a breach in red, a warning in yellow), boxed tables that fit the window and
a progress bar with speed and time left; a pipe, a file, cron or a Nagios agent gets the same facts as plain
columns (`daemon.status.aligned`), no escape codes and no carriage returns, so scripts read the same text
whatever the terminal. Rich decides what a terminal is (a tty whose TERM is not `dumb`; `NO_COLOR` turns the
colours off, `FORCE_COLOR` or `TTY_COMPATIBLE=1` forces the rich form on a pipe).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from daemon.core.snapshot import Snapshot
from daemon.status import STATUS_HEAD, STATUS_RIGHT, actions_status, aligned, status_rows

#: Styles of the words a person looks for first.
STYLES = {"CRITICAL": "bold red", "BREACH": "bold red", "FAILED": "bold red", "WARNING": "yellow",
          "AT_RISK": "yellow", "AT RISK": "yellow", "OK": "green", "UNKNOWN": "magenta"}


def console(out: TextIO | None = None) -> Console:
    """A rich console on `out` (stdout by default); `wants_rich` says whether the rich form is wanted."""
    return Console(file=out or sys.stdout, highlight=False, soft_wrap=False)


def wants_rich(con: Console) -> bool:
    """A terminal that can show it: a tty (or one forced by FORCE_COLOR / TTY_COMPATIBLE), not TERM=dumb."""
    return con.is_terminal and not con.is_dumb_terminal


def table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: frozenset[int] = frozenset(),
          out: TextIO | None = None, title: str | None = None) -> None:
    """Print `rows` under `head`: a rich table on a terminal, aligned plain columns otherwise."""
    con = console(out)
    if not wants_rich(con):
        if title:
            con.file.write(title + "\n")
        con.file.write("\n".join(aligned(head, rows, right)) + "\n")
        return
    con.print(_rich_table(head, rows, right, title))


def _rich_table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: frozenset[int],
                title: str | None = None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, title=Text(title) if title else None, title_justify="left", header_style="bold",
              pad_edge=False)  # Text: a name holding "[...]" is not rich markup
    for i, name in enumerate(head):
        t.add_column(name, justify="right" if i in right else "left", overflow="fold")
    for row in rows:
        t.add_row(*(Text(cell, style=STYLES.get(cell, "")) for cell in row))
    return t


def status(snap: Snapshot, now: datetime, out: TextIO | None = None) -> None:
    """`check`'s table: the databases, then each one's schedule, newest backups and active findings."""
    con = console(out)
    if not wants_rich(con):
        from daemon.status import status_table

        con.file.write(status_table(snap, now) + "\n")
        return
    blocks = status_rows(snap, now)
    mode = actions_status(snap)["mode"]
    if mode != "live":
        con.print(Text(f"remedial actions: {mode}", style="yellow"))
    con.print(_rich_table(STATUS_HEAD, [row for row, _ in blocks], STATUS_RIGHT))
    for row, details in blocks:
        if not details:
            continue
        con.print(Text(row[0], style="bold"))
        for line in details:
            word = line.split()[0] if line.split() else ""
            con.print(Text(line, style=STYLES.get(word, "dim" if line.startswith("      ") else "")))


class ProgressBar:
    """Progress of a long step (`drill`, `archive mirror`) as `(phase, done, total)` calls: a rich bar with
    bytes, speed and time left on a terminal (stderr), a spinner while the total is unknown; nothing at all
    otherwise (the log says how a long copy goes). Callable from any thread (one lock); `done()` clears it."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._console = Console(file=out or sys.stderr, highlight=False)
        self.tty = wants_rich(self._console)
        self.phase = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._lock = threading.Lock()

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.tty:
            return
        with self._lock:
            self._show(phase, done, total)

    def _show(self, phase: str, done: int, total: int | None) -> None:
        if self._progress is None:
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                      console=self._console, transient=True)
            self._progress.start()
        if phase != self.phase or self._task is None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(phase, total=total or None)
            self.phase = phase
        self._progress.update(self._task, completed=done, total=total or None)

    def done(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()  # shows the cursor again
                self._progress = None
