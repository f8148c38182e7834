"""A throwaway local PostgreSQL cluster (initdb + pg_ctl), for the embedded demo and for tests.

PostgreSQL refuses to run as root. When the guardian runs as root, the cluster is created and run as the
`postgres` system user (`runuser -u postgres --`), in directories handed over to that user.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loguru import logger

from daemon.adapters.postgres.tools import INSTALL_HINT, find_tool
from daemon.core.errors import GuardianError

CONF_NAME = "guardian.conf"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """One PostgreSQL cluster in `data_dir`, reachable on a unix socket in `socket_dir` (and on
    127.0.0.1 when `tcp` is True). `superuser_password` enables password authentication for TCP.
    """

    def __init__(self, data_dir: Path, socket_dir: Path, *, tcp: bool = False,
                 superuser_password: str | None = None) -> None:
        self.data_dir = data_dir.absolute()
        self.socket_dir = socket_dir.absolute()
        self.tcp = tcp
        self.password = superuser_password
        self.port: int | None = None
        self.superuser = "postgres"
        self._as_root = os.geteuid() == 0

    # -- running programs as the cluster owner ---------------------------------------------------------
    def _owner_prefix(self) -> list[str]:
        if not self._as_root:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise GuardianError(
                "running as root, and PostgreSQL refuses to run as root; there is no 'postgres' system user "
                f"to run the embedded cluster as: {INSTALL_HINT}, or run the guardian as an ordinary user"
            ) from None
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._owner_prefix() + args, capture_output=True, text=True, timeout=timeout,
                              check=False, start_new_session=True, env=_clean_env())

    def _own(self, path: Path) -> None:
        if self._as_root:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- lifecycle --------------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb into `data_dir` (which must not hold a cluster yet)."""
        initdb = find_tool("initdb")
        for folder in (self.data_dir, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._own(folder)
        self._check_reachable()
        args = [initdb, "-D", str(self.data_dir), "-U", self.superuser, "-E", "UTF8", "--no-sync",
                "--auth-local=trust"]
        pwfile = None
        if self.password:
            pwfile = self.data_dir.parent / f".pw-{secrets.token_hex(4)}"
            pwfile.write_text(self.password + "\n")
            self._own(pwfile)
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth-host=reject"]
        try:
            out = self._run(args)
        finally:
            if pwfile:
                pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise GuardianError(f"initdb failed: {out.stderr.strip()[-500:]}")
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write(f"\ninclude_if_exists '{CONF_NAME}'\n")

    def owner_can(self, test: str, folder: Path) -> bool:
        """True when the cluster owner (postgres, when we are root) passes `test -<test> folder`
        ("x": can enter it, every parent included; "w": can write it)."""
        if not self._as_root:
            return True
        return self._run(["test", f"-{test}", str(folder)], timeout=10).returncode == 0

    def _check_reachable(self) -> None:
        if not self.owner_can("w", self.data_dir):
            raise GuardianError(
                f"the 'postgres' user cannot write {self.data_dir}: a parent folder is private to root "
                "(PostgreSQL refuses to run as root, so the demo cluster runs as 'postgres'). Set "
                "GUARDIAN_STATE_DIR to a folder it can reach, for example /var/lib/guardian"
            )

    def start(self, timeout: float = 60, port: int | None = None) -> None:
        """Start on `port` (default: a free one); stops a server left running by an earlier crash first."""
        if self.running():
            self.stop()
        self.port = port or free_port()
        conf = (f"port = {self.port}\nunix_socket_directories = '{self.socket_dir}'\n"
                f"listen_addresses = '{'127.0.0.1' if self.tcp else ''}'\nfsync = off\n"
                "max_connections = 50\nshared_buffers = 32MB\n")
        (self.data_dir / CONF_NAME).write_text(conf)
        self._own(self.data_dir / CONF_NAME)
        pg_ctl = find_tool("pg_ctl")
        log = self.data_dir / "server.log"
        out = self._run([pg_ctl, "-D", str(self.data_dir), "-l", str(log), "-w", "-t", str(int(timeout)),
                         "start"], timeout=timeout + 10)
        if out.returncode != 0:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else out.stderr
            raise GuardianError(f"PostgreSQL did not start: {tail.strip()}")

    def running(self) -> bool:
        if not self.initialized:
            return False
        out = self._run([find_tool("pg_ctl"), "-D", str(self.data_dir), "status"], timeout=30)
        return out.returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        if not self.initialized:
            return
        self._run([find_tool("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)),
                   "stop"], timeout=timeout + 10)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    # -- addresses --------------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres", *, tcp: bool | None = None) -> str:
        """A libpq URL for `dbname`: over TCP with the password when tcp, else over the unix socket."""
        if self.port is None:
            raise GuardianError("the cluster is not started")
        if tcp if tcp is not None else self.tcp:
            auth = f"{self.superuser}:{quote(self.password, safe='')}" if self.password else self.superuser
            return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"
        return f"postgresql://{self.superuser}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"


def cluster_in(state_dir: Path, name: str, **kw: Any) -> LocalCluster:
    """A cluster under `<state_dir>/<name>`. As root, PostgreSQL runs as 'postgres', which cannot enter a private
    folder such as /root: then the cluster lives in that user's home instead (said in the log), keyed by the
    state directory, so each guardian keeps its own."""
    base = state_dir.absolute() / name
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    cluster = LocalCluster(base / "data", base / "run", **kw)
    if os.geteuid() != 0 or cluster.owner_can("x", base):
        return cluster
    home = Path(pwd.getpwnam("postgres").pw_dir)
    key = hashlib.sha256(str(base).encode()).hexdigest()[:8]
    new = home / "pg-backup-guardian" / f"{name}-{key}"
    logger.info("{} is private to root and PostgreSQL runs as 'postgres', so the {} cluster lives in {} instead",
                base, name, new)
    entry = pwd.getpwnam("postgres")
    for folder in (new.parent, new):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        folder.chmod(0o755)
    return LocalCluster(new / "data", new / "run", **kw)


def _clean_env() -> dict[str, str]:
    """The environment for server programs: no PG* variables of the caller leak into initdb or pg_ctl."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env
