"""`make stack` / `fitonfhir stack`: the production shape of Dagster, on loopback, as separate processes.

A throw-away PostgreSQL cluster (Dagster storage and the users table), a DAGSTER_HOME written from
``deploy/dagster.yaml`` (Postgres via the DAGSTER_PG_* variables, QueuedRunCoordinator, run monitoring, the
google_fit_api pool; only its intervals are shortened, see :func:`instance_config`), then each in its own
process group: the sandbox, the onboarding app, a code server (``dagster code-server start``, the
Dockerfile's CMD), ``dagster-daemon run`` and ``dagster-webserver`` reaching it over gRPC. Sandbox users are
onboarded through the real flow, the daemon's ``users_sensor`` queues their history runs, the stack waits
for them on the instance and prints the summary of ``fitonfhir demo``. Everything it started is stopped
when the block ends, on Ctrl-C, SIGTERM or an error: SIGTERM to each process group, SIGKILL after a grace
period (DESIGN section 8: a script's background children may ignore SIGINT, so never rely on it).

Dagster does not stop a second daemon on the same instance (it only logs "Another SENSOR daemon is still
sending heartbeats"), so :meth:`Stack.start_daemon` refuses while another daemon's heartbeat is fresh, and
:meth:`Stack.wait_for_runs` fails when a daemon it did not start beats.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

from .postgres import PostgresServer, free_port, running_postgres

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_INSTANCE = ROOT / "deploy" / "dagster.yaml"
LOCATION = "fitonfhir"
IMPORT_JOB = "user_day_import"
SENSOR_TAG = "dagster/sensor_name"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
DAEMON_FRESH_SECONDS = 90  # a heartbeat younger than this means a daemon is alive (Dagster beats every 30 s)
_PID = re.compile(r"Started process for run \(pid: (\d+)\)")

T = TypeVar("T")


class StackError(RuntimeError):
    pass


@dataclass
class StackConfig:
    users: int = 3
    days: int = 3
    timeout: float = 600.0  # for the history runs to finish
    webserver: bool = True
    dequeue_interval_seconds: int = 1
    monitoring_poll_seconds: int = 5
    free_slots_after_run_end_seconds: int = 5
    start_timeout_seconds: int = 180
    pool_limit: int | None = None  # explicit google_fit_api limit (deploy default: 4)
    env: dict[str, str] = field(default_factory=dict)  # extra FITONFHIR_* settings of every process


def instance_config(config: StackConfig) -> dict[str, Any]:
    """``deploy/dagster.yaml`` with the stack's shorter intervals (the shape and every limit stay)."""
    if not DEPLOY_INSTANCE.is_file():
        raise StackError(f"{DEPLOY_INSTANCE} is missing: run `fitonfhir stack` from a source checkout")
    instance = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    instance["run_coordinator"]["config"]["dequeue_interval_seconds"] = config.dequeue_interval_seconds
    instance["run_coordinator"]["config"]["user_code_failure_retry_delay"] = 2
    monitoring = instance["run_monitoring"]
    monitoring["poll_interval_seconds"] = config.monitoring_poll_seconds
    monitoring["start_timeout_seconds"] = config.start_timeout_seconds
    monitoring["free_slots_after_run_end_seconds"] = config.free_slots_after_run_end_seconds
    return instance


class ManagedProcess:
    """One service in its own process group (a session), its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (fault injection: nothing gets to clean up)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; also reaps children left in the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._signal_group(signal.SIGKILL)  # grandchildren that outlived their parent

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; StackError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except StackError:
            raise
        except Exception:  # not up yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    return requests.get(url, timeout=3).status_code < 500


def _script(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise StackError(f"{path} not found: install the project into this Python environment first")
    return str(path)


class Stack:
    """The running processes and the instance they share; built by :func:`running_stack`."""

    def __init__(self, workdir: Path, pg: PostgresServer, config: StackConfig) -> None:
        self.workdir, self.pg, self.config = workdir, pg, config
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home = workdir / "dagster_home"
        self.dagster_home.mkdir(exist_ok=True)
        self.processes: dict[str, ManagedProcess] = {}
        self._own_daemon_ids: set[str] = set()
        self._instance: Any = None
        today = datetime.now(UTC).date()
        self.first_day = today - timedelta(days=config.days)
        self.last_day = today - timedelta(days=1)
        db = "dagster_" + uuid.uuid4().hex[:8]
        pg.create_database(db)
        users_db = "users_" + uuid.uuid4().hex[:8]
        self.sandbox_url = f"http://127.0.0.1:{free_port()}"
        self.onboarding_url = f"http://127.0.0.1:{free_port()}"
        self.grpc_port = free_port()
        self.webserver_url = f"http://127.0.0.1:{free_port()}"
        self.pg_env = {
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_USERNAME": pg.user,
            "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_DB": db,
        }
        settings = {
            "FITONFHIR_HOME": str(workdir / "fitonfhir"),
            "FITONFHIR_SANDBOX_URL": self.sandbox_url,
            "FITONFHIR_ONBOARDING_URL": self.onboarding_url,
            "FITONFHIR_POSTGRES_URL": pg.create_database(users_db),
            "FITONFHIR_INITIAL_DAYS": str(config.days),
            "FITONFHIR_START_DATE": self.first_day.isoformat(),
            # shortened like the instance's intervals: a killed run's import lease is free 15 s after it
            # last renewed it (production: 120 s), so its retry does not wait the whole default TTL
            "FITONFHIR_USER_LEASE_TTL_SECONDS": "15",
            **config.env,
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("FITONFHIR_", "DAGSTER_"))}
        self.env = {**inherited, **settings, **self.pg_env, "DAGSTER_HOME": str(self.dagster_home)}
        (self.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(config)))
        self.workspace = workdir / "workspace.yaml"
        self.workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "grpc_server": {
                                "host": "127.0.0.1",
                                "port": self.grpc_port,
                                "location_name": LOCATION,
                            }
                        }
                    ]
                }
            )
        )

    # -- processes ------------------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str]) -> ManagedProcess:
        old = self.processes.get(name)
        if old is not None and old.alive():
            raise StackError(f"{name} is already running (pid {old.pid})")
        process = ManagedProcess(name, argv, self.env, self.logs).start()
        self.processes[name] = process
        return process

    def _await(self, process: ManagedProcess, check: Callable[[], Any], timeout: float = 180) -> None:
        def ready() -> Any:
            if not process.alive():
                raise StackError(
                    f"{process.name} exited ({process.proc and process.proc.returncode}):\n" + process.tail()
                )
            return check()

        wait_until(ready, timeout, f"{process.name} to answer")

    def start_services(self) -> None:
        fitonfhir = _script("fitonfhir")
        port = self.sandbox_url.rsplit(":", 1)[1]
        sandbox = self._start("sandbox", [fitonfhir, "sandbox", "--port", port])
        self._await(sandbox, lambda: _http_ok(self.sandbox_url + "/.well-known/openid-configuration"))
        port = self.onboarding_url.rsplit(":", 1)[1]
        onboarding = self._start("onboarding", [fitonfhir, "onboarding", "serve", "--port", port])
        self._await(onboarding, lambda: _http_ok(self.onboarding_url + "/"))

    def start_code_server(self) -> None:
        from dagster._grpc.client import DagsterGrpcClient

        argv = [
            _script("dagster"),
            "code-server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.grpc_port),
        ]
        argv += ["--module-name", "fitonfhir_dagster.definitions", "--location-name", LOCATION]
        process = self._start("code-server", argv)
        client = DagsterGrpcClient(port=self.grpc_port, host="127.0.0.1")

        def serving() -> bool:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=2):
                pass  # listening: only now ask gRPC (its client logs every refused connection)
            return client.health_check_query() == "SERVING"

        self._await(process, serving)

    def start_daemon(self, name: str = "daemon", *, guard: bool = True) -> ManagedProcess:
        """``dagster-daemon run``; refuses while a daemon this stack did not start sends heartbeats."""
        if guard:
            other = self.foreign_daemon()
            if other:
                raise StackError(
                    f"another dagster-daemon (id {other}) is sending heartbeats to this instance; Dagster "
                    "does not support two daemons on one instance: stop it first"
                )
        started = time.time()
        process = self._start(name, [_script("dagster-daemon"), "run", "-w", str(self.workspace)])
        if guard:

            def beating() -> bool:
                heartbeats = self.instance().get_daemon_heartbeats()
                fresh = [h for h in heartbeats.values() if h.timestamp >= started]
                self._own_daemon_ids.update(h.daemon_id for h in fresh)
                return bool(fresh)

            self._await(process, beating)
        return process

    def start_webserver(self) -> None:
        port = self.webserver_url.rsplit(":", 1)[1]
        argv = [_script("dagster-webserver"), "-w", str(self.workspace), "-h", "127.0.0.1", "-p", port]
        process = self._start("webserver", argv)
        self._await(process, lambda: _http_ok(self.webserver_url + "/server_info"))

    def start_dagster(self) -> None:
        self.start_code_server()
        self.start_daemon()
        if self.config.webserver:
            self.start_webserver()

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.processes[name].stop()

    # -- instance -------------------------------------------------------------------------------------

    def instance(self) -> Any:
        """The shared DagsterInstance (this process reads it from the same DAGSTER_HOME)."""
        if self._instance is None:
            import dagster as dg

            os.environ.update(self.pg_env)  # dagster.yaml reads the DAGSTER_PG_* variables
            self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def foreign_daemon(self) -> str | None:
        """The id of a live daemon this stack did not start, if one beats (None otherwise)."""
        now = time.time()
        for heartbeat in self.instance().get_daemon_heartbeats().values():
            fresh = now - heartbeat.timestamp < DAEMON_FRESH_SECONDS
            if fresh and heartbeat.daemon_id not in self._own_daemon_ids:
                return str(heartbeat.daemon_id)
        return None

    def runs(self, job: str = IMPORT_JOB, tags: Mapping[str, str] | None = None) -> list[Any]:
        import dagster as dg

        records = self.instance().get_run_records(dg.RunsFilter(job_name=job, tags=dict(tags or {})))
        return [r.dagster_run for r in records]

    def wait_for_runs(
        self, count: int, timeout: float, tags: Mapping[str, str] | None = None, job: str = IMPORT_JOB
    ) -> list[Any]:
        """At least ``count`` runs of ``job`` with ``tags``, every one finished (retries included)."""

        def done() -> list[Any] | None:
            other = self.foreign_daemon()
            if other:
                raise StackError(f"a second dagster-daemon (id {other}) joined this instance; stopping")
            runs = self.runs(job, tags)
            if (
                len(runs) >= count
                and all(r.status.value in FINISHED for r in runs)
                and not self._retry_due(runs)
            ):
                return runs
            return None

        try:
            return wait_until(done, timeout, f"{count} finished {job} runs", interval=1.0)
        except StackError as exc:
            states = ", ".join(f"{r.run_id[:8]} {r.status.value}" for r in self.runs(job, tags))
            raise StackError(f"{exc} (runs: {states or 'none'})") from None

    def _retry_due(self, runs: list[Any]) -> bool:
        """A failed run whose automatic retry (run_retries) is not launched yet."""
        retried = {r.tags.get("dagster/parent_run_id") for r in runs}
        for run in runs:
            if run.status.value == "FAILURE" and run.run_id not in retried:
                attempt = int(run.tags.get("dagster/retry_number", "0"))
                if attempt < 2 and run.tags.get("dagster/will_retry") == "true":
                    return True
        return False

    def run_worker_pid(self, run_id: str) -> int | None:
        """The pid of the run worker process (its ``Started process for run`` engine event)."""
        for entry in self.instance().all_logs(run_id):
            match = _PID.search(entry.message or "")
            if match:
                return int(match.group(1))
        return None

    # -- onboarding and the report ---------------------------------------------------------------------

    def settings(self) -> Any:
        from fitonfhir_dagster.settings import Settings

        return Settings.from_env({k: v for k, v in self.env.items() if k.startswith("FITONFHIR_")})

    def onboard(self, count: int, first: int = 1) -> list[str]:
        """Onboard sandbox users ``first .. first+count-1`` through the real flow; their user keys."""
        from fitonfhir_dagster.stores.factory import open_users_table

        from .accounts import sub_for_email
        from .onboarding_driver import onboard_sandbox_user, sandbox_email

        users = open_users_table(self.settings())
        keys = []
        for i in range(first, first + count):
            onboard_sandbox_user(self.onboarding_url, i)
            row = users.find_by_google_sub(sub_for_email(sandbox_email(i)))
            if row is None:
                raise StackError(f"onboarding of {sandbox_email(i)} finished but no users row exists")
            keys.append(row.key)
        return keys

    def report(self, keys: list[str]) -> Any:
        import dagster as dg

        from fitonfhir_dagster.pipeline.step_stores import StepStores

        from .demo import DemoReport, UserReport, fill_from_archive, observations_on_server
        from .onboarding_driver import sandbox_email

        report = DemoReport(first_day=self.first_day, last_day=self.last_day)
        by_key = {key: UserReport(key, sandbox_email(i)) for i, key in enumerate(keys, start=1)}
        report.users = list(by_key.values())
        for run in self.runs():
            for entry in self.instance().all_logs(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ):
                materialization = entry.asset_materialization
                user = by_key.get(str(materialization.partition or "").rsplit("|", 1)[-1])
                if user is None:
                    continue
                meta = {k: v.value for k, v in materialization.metadata.items()}
                asset = materialization.asset_key.to_user_string()
                if asset == "device_messages":
                    user.messages += int(meta.get("messages", 0))
                elif asset == "fhir_observations":
                    user.observations_written += int(meta.get("created", 0)) + int(meta.get("updated", 0))
                    user.dead_letters += int(meta.get("dead_lettered", 0))
        settings = self.settings()
        fill_from_archive(report, StepStores.open(settings))
        report.observations_total = observations_on_server(settings)
        return report

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None


@contextlib.contextmanager
def running_stack(config: StackConfig | None = None, *, keep: Path | None = None) -> Iterator[Stack]:
    """PostgreSQL + the processes of :class:`Stack` (not yet started); everything stops when the block ends."""
    config = config or StackConfig()
    workdir = keep or Path(tempfile.mkdtemp(prefix="fitonfhir-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    saved = {
        k: os.environ.get(k)
        for k in (
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_PORT",
            "DAGSTER_PG_USERNAME",
            "DAGSTER_PG_PASSWORD",
            "DAGSTER_PG_DB",
        )
    }
    try:
        with running_postgres() as pg:
            stack = Stack(workdir, pg, config)
            try:
                yield stack
            finally:
                stack.close()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run_stack(config: StackConfig, echo: Callable[[str], None] = print, keep: Path | None = None) -> Any:
    """What `make stack` runs: start everything, onboard, let the daemon import, report, stop."""
    with running_stack(config, keep=keep) as stack:
        echo(
            f"PostgreSQL {stack.pg.version} on 127.0.0.1:{stack.pg.port} (started in {stack.pg.startup_seconds:.1f} s)"
        )
        stack.start_services()
        echo(f"sandbox (Google + FHIR): {stack.sandbox_url}   onboarding app: {stack.onboarding_url}")
        keys = stack.onboard(config.users)
        echo(f"onboarded {len(keys)} sandbox users: {', '.join(keys)}")
        stack.start_dagster()
        echo(
            f"code server 127.0.0.1:{stack.grpc_port}, dagster-daemon, webserver {stack.webserver_url}"
            if config.webserver
            else f"code server 127.0.0.1:{stack.grpc_port}, dagster-daemon"
        )
        echo(f"waiting for the users_sensor's history runs ({stack.first_day} .. {stack.last_day})")
        runs = stack.wait_for_runs(len(keys), config.timeout, tags={SENSOR_TAG: "users_sensor"})
        failed = [r.run_id for r in final_attempts(runs) if r.status.value != "SUCCESS"]
        report = stack.report(keys)
        if failed:
            raise StackError(
                f"{len(failed)} run(s) did not succeed: {', '.join(failed)}; logs in {stack.logs}"
            )
        return report


def final_attempts(runs: list[Any]) -> list[Any]:
    """The runs no automatic retry replaced (a retry names its parent in ``dagster/parent_run_id``)."""
    parents = {r.tags.get("dagster/parent_run_id") for r in runs}
    return [r for r in runs if r.run_id not in parents]
