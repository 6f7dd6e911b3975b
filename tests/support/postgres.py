"""Start a real, throw-away PostgreSQL cluster on loopback for tests (Debian package ``postgresql``).

``initdb`` into a fresh temporary directory, then ``postgres -D dir -k dir -p <free port>
-c listen_addresses=127.0.0.1``; the cluster is removed when the block ends. ``initdb`` refuses to run as
root, so as root both run as the system user ``postgres`` (created by the Debian package) in a directory
owned by it. Password authentication (scram-sha-256) over TCP, so the URLs the tests get carry a real
password like a production URL does. Durability is switched off (fsync, synchronous_commit): a test
cluster has nothing to keep.

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


def _free_port() -> int:
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

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (a fresh one per caller keeps tests apart); returns its URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a database name for tests: {name!r}")
        conn = psycopg2.connect(self.url(), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)


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
        log_path = workdir / "postgres.log"
        for attempt in range(3):  # the free port may be taken between probing and binding: try another
            port = _free_port()
            with open(log_path, "a") as log:
                if run_as:
                    os.chown(log_path, run_as["user"], run_as["group"])
                proc = subprocess.Popen(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-k",
                        str(workdir),
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
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **run_as,
                )
            server = PostgresServer("127.0.0.1", port, SUPERUSER, password, version, 0.0)
            deadline = time.monotonic() + startup_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    psycopg2.connect(server.url(), connect_timeout=2).close()
                    break
                except psycopg2.OperationalError:
                    time.sleep(0.05)
            if proc.poll() is None and time.monotonic() < deadline:
                break
            output = log_path.read_text(errors="replace")
            _stop(proc)
            if "could not bind" in output and attempt < 2:
                continue
            raise RuntimeError(f"PostgreSQL did not start (exit code {proc.poll()}); its log:\n{output}")
        server.startup_seconds = time.monotonic() - started
        try:
            yield server
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT: disconnect clients, abort their transactions), then kill if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def postgres_session() -> Iterator[PostgresServer]:
    """Body of a session fixture: a missing or broken PostgreSQL fails the tests with the reason (no skip)."""
    import pytest

    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(running_postgres())
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with stack:
        yield server
