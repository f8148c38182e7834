"""The local directory archive store: backups as files, `<root>/<quoted database>/<backup_id>.dump` plus
`<backup_id>.json`, each written to a flocked temp file, fsynced and renamed into place; the sweep removes only
temp files no live process holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

from loguru import logger

from daemon.adapters.archive import exports
from daemon.adapters.archive.records import BackupRecord
from daemon.core.errors import CaptureError, CollectorError, GuardianError
from daemon.core.retention import ArchivedObject, assign_tier


class LocalDirectoryStore:
    """Backups as files: `<root>/<quoted database>/<backup_id>.dump` plus `<backup_id>.json`.

    Dumps are written to a hidden `.partial` temp file, fsynced and renamed; the record is written the same
    way afterwards. A dump without a record is an orphan and never counts as a backup.

    Every temp file belongs to the process writing it: the writer holds an exclusive flock on the file from
    before its first byte until the dump and its record are in place (or the file is gone). The kernel drops
    the lock when the writer's process dies, so "locked" means "a live process is writing it", and the sweep
    removes only files whose lock it can take.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.last_skipped = 0
        self._warned: set[Path] = set()

    def describe(self) -> str:
        return f"local directory {self.root}"

    def _dir(self, database: str) -> Path:
        return self.root / quote(database, safe="")

    def dump_path(self, database: str, backup_id: str) -> Path:
        return self._dir(database) / f"{backup_id}.dump"

    def list_records(self, database: str) -> list[BackupRecord]:
        folder = self._dir(database)
        if not self.root.exists():
            raise CollectorError(f"archive directory {self.root} does not exist")
        records: list[BackupRecord] = []
        skipped = 0
        try:
            names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        except OSError as exc:
            raise CollectorError(f"cannot list archive directory {folder}: {exc.strerror}") from None
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = folder / name
            try:
                record = BackupRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                skipped += 1
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipping unreadable backup record {}: {}", path, exc)
                continue
            if record.outcome == "succeeded":
                record = self._verify_file(record)
            records.append(record)
        self.last_skipped = skipped
        records.sort(key=lambda r: r.started_at)
        return records

    def _verify_file(self, record: BackupRecord) -> BackupRecord:
        dump = self.dump_path(record.database, record.backup_id)
        try:
            size = dump.stat().st_size
        except OSError:
            size = -1
        if size != record.size_bytes:
            problem = ("dump file is missing" if size < 0
                       else f"dump file is {size} bytes, record says {record.size_bytes}")
            return replace(record, outcome="failed", error=problem)
        return record

    def begin(self, database: str, backup_id: str, recovery_point: datetime | None = None,
              origin: str = "self", size_hint: int | None = None) -> _LocalWriter:
        folder = self._dir(database)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = _owned_temp(folder, f".{backup_id}.")
        except OSError as exc:
            raise CaptureError(f"archive directory {folder} is not writable: {exc.strerror}") from None
        # the data goes through a second descriptor: closing it at seal keeps the lock, which lives on `fd`
        # until commit has written the record
        return _LocalWriter(self, database, backup_id, tmp, os.fdopen(os.dup(fd), "wb"), fd)

    def record_failure(self, record: BackupRecord) -> None:
        folder = self._dir(record.database)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / f"{record.backup_id}.json", _dumps(record))
        except OSError as exc:
            raise CaptureError(f"cannot record the failed attempt in {folder}: {exc.strerror}") from None

    def delete(self, database: str, backup_id: str) -> None:
        folder = self._dir(database)
        # Record first: a dump without a record is an orphan, never a backup that looks good but is gone.
        for suffix in (".json", ".dump"):
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{backup_id}{suffix}").unlink()

    def objects(self, database: str) -> list[ArchivedObject]:
        return self.inventory(database)[1]

    def inventory(self, database: str) -> tuple[list[BackupRecord], list[ArchivedObject]]:
        records = self.list_records(database)
        return records, [ArchivedObject(database=database, backup_id=r.backup_id,
                                        key=str(self.dump_path(database, r.backup_id)), recovery_point=r.started_at,
                                        size_bytes=r.size_bytes, tier=r.tier or "daily",
                                        succeeded=r.outcome == "succeeded", source=r.origin, sha256=r.sha256,
                                        encrypted=None, label=r.label)
                         for r in records]

    def set_tier(self, database: str, backup_id: str, tier: str, label: str | None = None) -> BackupRecord:
        record = next((r for r in self.list_records(database) if r.backup_id == backup_id), None)
        if record is None or record.outcome != "succeeded":
            raise GuardianError(f"{database}: no good archived backup {backup_id}")
        record = replace(record, tier=tier, label=label)
        _atomic_write(self._dir(database) / f"{backup_id}.json", _dumps(record))
        return record

    def posture(self) -> list[str]:
        return []  # a local directory has no bucket settings; its disk is the operator's

    def open_dump(self, database: str, backup_id: str) -> Iterator[bytes]:
        try:
            with self.dump_path(database, backup_id).open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    yield chunk
        except OSError as exc:
            raise GuardianError(f"cannot read dump {backup_id} of {database}: {exc.strerror}") from None

    def put_blob(self, database: str, name: str, data: bytes, content_type: str) -> str:
        path = self._dir(database) / "reports" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
        return str(path)

    def put_file(self, database: str, name: str, path: Path, content_type: str) -> str:
        dest = self._dir(database) / "reports" / name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as src:
                _atomic_fill(dest, lambda fh: shutil.copyfileobj(src, fh, CHUNK))
        except OSError as exc:
            raise GuardianError(f"cannot store {name} in {dest.parent}: {exc.strerror}") from None
        return str(dest)

    def exports(self, database: str) -> list[ArchivedObject]:
        """The database's compliance exports (see daemon.adapters.archive.exports). Raises CollectorError."""
        folder = self._dir(database) / "reports" / exports.FOLDER
        out = []
        try:
            stamps = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []
            for path in stamps:
                manifest = path / exports.MANIFEST
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                found = exports.export_object(database, path.name, str(path), size,
                                              manifest.read_bytes() if manifest.exists() else None)
                if found is not None:
                    out.append(found)
        except OSError as exc:
            raise CollectorError(f"cannot list compliance exports in {folder}: {exc.strerror}") from None
        return out

    def delete_export(self, database: str, export_id: str) -> None:
        """Remove one compliance export's folder: its manifest first (what is left is an incomplete export, never
        a manifest naming files that are gone), then its files. Raises GuardianError."""
        path = self._dir(database) / "reports" / exports.FOLDER / exports.stamp_of(export_id)
        try:
            with contextlib.suppress(FileNotFoundError):
                (path / exports.MANIFEST).unlink()
            for item in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # deepest first
                if item.is_dir():
                    item.rmdir()
                else:
                    item.unlink()
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()
        except OSError as exc:
            raise GuardianError(f"cannot delete compliance export {export_id} of {database}: {exc.strerror}") from None
        _fsync_dir(path.parent)

    def sweep_partials(self) -> int:
        """Remove temp files and dumps without a record that a dead process left behind; safe at any time,
        also while other processes (a replica, the `capture` command) write: a file whose writer's lock is
        held is skipped. Returns how many files were removed."""
        removed = 0
        if not self.root.exists():
            return 0
        orphans = [p for p in self.root.glob("*/*.dump") if not p.with_suffix(".json").exists()]
        for path in [*self.root.glob("*/.*.partial"), *orphans]:
            removed += _remove_if_abandoned(path, orphan=path.suffix == ".dump")
        return removed


class _LocalWriter:
    def __init__(self, store: LocalDirectoryStore, database: str, backup_id: str, tmp: Path, fh: Any,
                 lock_fd: int) -> None:
        self.store, self.database, self.backup_id, self.tmp, self.fh = store, database, backup_id, tmp, fh
        self.lock_fd: int | None = lock_fd  # holds the flock that marks the files as this process's

    def _release(self) -> None:
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    def write(self, chunk: bytes | memoryview) -> None:
        try:
            self.fh.write(chunk)
        except OSError as exc:
            raise CaptureError(f"writing the dump failed: {exc.strerror}") from None

    def seal(self) -> None:
        if self.fh.closed:
            return
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
        except OSError as exc:
            self.abort()
            raise CaptureError(f"writing the dump failed: {exc.strerror}") from None

    def commit(self, record: BackupRecord) -> None:
        final = self.store.dump_path(self.database, self.backup_id)
        try:
            self.seal()
            if record.tier is None:
                try:
                    existing = self.store.objects(self.database)
                except GuardianError:
                    existing = []
                record = replace(record, tier=assign_tier(record.started_at, existing))
            try:
                # the lock follows the file through the rename: until the record exists, the dump is an orphan
                # that the sweep must leave alone
                os.replace(self.tmp, final)
                _atomic_write(final.with_suffix(".json"), _dumps(record))
            except OSError as exc:
                self.abort()
                with contextlib.suppress(OSError):
                    final.unlink()
                raise CaptureError(f"storing the dump in {final.parent} failed: {exc.strerror}") from None
        finally:
            self._release()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
        self._release()


def _dumps(record: BackupRecord) -> bytes:
    return (json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n").encode()


#: What a file copied into the archive is read by at a time (`put_file`).
CHUNK = 1 << 20


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_fill(path, lambda fh: fh.write(data))


def _atomic_fill(path: Path, fill: Callable[[IO[bytes]], object]) -> None:
    """Write `path` through an owned temp file that `fill` writes, fsynced and renamed into place."""
    fd, tmp = _owned_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(os.dup(fd), "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock, after the rename
    _fsync_dir(path.parent)


def _owned_temp(folder: Path, prefix: str) -> tuple[int, Path]:
    """A new `<prefix>*.partial` file in `folder` and a descriptor holding its exclusive flock (the caller
    closes it when the file is in place or gone). Raises OSError.

    The file exists for a moment before the lock is taken, so a sweep may take it first and remove it: the
    lock is then ours but the name is gone (no links left), and we start again with a new file."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".partial", dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits at most for a sweep's unlink
            if os.fstat(fd).st_nlink > 0:
                return fd, Path(tmp)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _remove_if_abandoned(path: Path, orphan: bool) -> int:
    """Remove `path` when no live process owns it: 1 when removed, else 0. Takes the owner's flock without
    waiting and unlinks while holding it; a busy lock means its writer is alive. An orphan dump is checked
    again under the lock, because its writer may have written the record and let go just before."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0  # gone already: its writer finished or aborted
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            return 0
        if not same or (orphan and path.with_suffix(".json").exists()):
            return 0  # renamed over or completed since we listed it
        path.unlink()
        return 1
    except OSError:
        return 0
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def database_from_dirname(name: str) -> str:
    return unquote(name)
