"""A real, throw-away PostgreSQL cluster on loopback (Debian package ``postgresql``), for ``fitonfhir stack``
and the tests (tests/support/postgres.py re-exports it).

``initdb`` into a fresh temporary directory, then ``postgres -D dir -k dir -p <free port>
-c listen_addresses=127.0.0.1``; the cluster is removed when the block ends. ``initdb`` refuses to run as
root, so as root both run as the system user ``postgres`` (created by the Debian package) in a directory
owned by it. Password authentication (scram-sha-256) over TCP, so the URLs carry a real password like a
production URL does. Durability is switched off (fsync, synchronous_commit): a throw-away cluster has
nothing to keep. The server runs in its own process group; :meth:`PostgresServer.restart` stops and starts
it again on the same port and data directory (clients see their connections dropped, then reconnect).

    with running_postgres() as pg:
        url = pg.create_database("users_test")  # postgresql://fitonfhir:...@127.0.0.1:PORT/users_test
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

SUPERUSER = "fitonfhir"
SYSTEM_USER = "postgres"  # the account Debian's postgresql package creates
MISSING = (
    "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin: install the "
    "Debian package `postgresql` (apt-get install -y postgresql)"
)
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bindir() -> Path:
    """The newest installed server's bin directory, or FITONFHIR_TEST_PG_BINDIR when set."""
    override = os.environ.get("FITONFHIR_TEST_PG_BINDIR")
    candidates = (
        [Path(override)]
        if override
        else sorted(
            (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise RuntimeError(MISSING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    version: str
    startup_seconds: float  # initdb + start + first accepted connection
    _restart: Any = field(default=None, repr=False, compare=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (a fresh one per caller keeps tests apart); returns its URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a database name: {name!r}")
        conn = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Fast shutdown (every client connection is dropped), stay down ``down_seconds``, start again."""
        self._restart(down_seconds)


def _as_postgres_user() -> dict:
    """Popen arguments that run the server as the unprivileged system user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root and there is no system user {SYSTEM_USER!r} to run PostgreSQL as "
            "(the Debian package `postgresql` creates it)"
        ) from exc
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class _Cluster:
    def __init__(self, bindir: Path, workdir: Path, run_as: dict, env: dict[str, str]) -> None:
        self.bindir, self.workdir, self.run_as, self.env = bindir, workdir, run_as, env
        self.data = workdir / "data"
        self.log_path = workdir / "postgres.log"
        self.proc: subprocess.Popen | None = None

    def start(self, port: int, password: str, timeout: float) -> str:
        """Start on ``port``; '' when up, else the log (the caller decides whether to try another port)."""
        with open(self.log_path, "a") as log:
            if self.run_as:
                os.chown(self.log_path, self.run_as["user"], self.run_as["group"])
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-k",
                    str(self.workdir),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server: we stop it
                **self.run_as,
            )
        url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                psycopg2.connect(url, connect_timeout=2).close()
                return ""
            except psycopg2.OperationalError:
                time.sleep(0.05)
        output = self.log_path.read_text(errors="replace")
        self.stop()
        return output or f"exit code {self.proc.poll()}"

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, abort their transactions), then kill if it hangs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_postgres(*, startup_timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Run one throw-away PostgreSQL cluster for the duration of the block."""
    started = time.monotonic()
    bindir = find_bindir()
    run_as = _as_postgres_user()
    # Not under pytest's tmp dir: that is 0700 root-owned, so the postgres user could not reach it.
    workdir = Path(tempfile.mkdtemp(prefix="fitonfhir-pg-"))
    try:
        data = workdir / "data"
        password = secrets.token_urlsafe(18)
        pwfile = workdir / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if run_as:
            for path in (workdir, pwfile):
                os.chown(path, run_as["user"], run_as["group"])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=startup_timeout,
            check=False,
            **run_as,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        pwfile.unlink()
        version = (data / "PG_VERSION").read_text().strip()
        cluster = _Cluster(bindir, workdir, run_as, env)
        for attempt in range(3):  # the free port may be taken between probing and binding: try another
            port = free_port()
            failure = cluster.start(port, password, startup_timeout)
            if not failure:
                break
            if "could not bind" in failure and attempt < 2:
                continue
            raise RuntimeError(f"PostgreSQL did not start; its log:\n{failure}")

        def restart(down_seconds: float) -> None:
            cluster.stop()
            time.sleep(down_seconds)
            failure = cluster.start(port, password, startup_timeout)
            if failure:
                raise RuntimeError(f"PostgreSQL did not start again on port {port}; its log:\n{failure}")

        server = PostgresServer("127.0.0.1", port, SUPERUSER, password, version, 0.0, restart)
        server.startup_seconds = time.monotonic() - started
        try:
            yield server
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
