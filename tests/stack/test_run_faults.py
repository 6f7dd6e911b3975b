"""Faults of a distributed deployment, with the real processes: a run worker SIGKILLed while it holds the
google_fit_api pool slot (limit 1), on the embedded instance (SQLite, fitonfhir_sandbox/dagster_instance.yaml,
a real ``dagster-daemon``) and on the production shape (``fitonfhir stack``: PostgreSQL, code server, daemon).

What Dagster does (1.13, DefaultRunLauncher): the code server notices its run subprocess died and marks the
run FAILURE within a second (its orphan check); run monitoring frees the pool slots of a finished run only
when ``free_slots_after_run_end_seconds`` is set (without it the slot leaks and the next run waits forever);
run retries then launch the failed run again. The sandbox delays each dataset request so that the kill lands
mid-run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import dagster as dg
import yaml

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.settings import Settings
from fitonfhir_sandbox.local_services import local_services
from fitonfhir_sandbox.onboarding_driver import onboard_sandbox_user
from fitonfhir_sandbox.stack import (
    ManagedProcess,
    Stack,
    StackConfig,
    final_attempts,
    running_stack,
    wait_until,
)

POOL = "google_fit_api"
DATASETS = "/datasets/"


def _kill_the_slot_holder(instance: dg.DagsterInstance, pid_of, timeout: float = 120) -> str:
    """SIGKILL the run worker holding the pool's only slot (mid-run); returns its run id."""

    def holder() -> str | None:
        claimed = instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
        return claimed[0].run_id if claimed else None

    run_id = wait_until(holder, timeout, "a run to claim the google_fit_api slot")
    pid = wait_until(lambda: pid_of(run_id), 30, "the run worker's pid")
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    return run_id


def _pid_from_logs(instance: dg.DagsterInstance):
    import re

    pattern = re.compile(r"Started process for run \(pid: (\d+)\)")

    def pid_of(run_id: str) -> int | None:
        for entry in instance.all_logs(run_id):
            match = pattern.search(entry.message or "")
            if match:
                return int(match.group(1))
        return None

    return pid_of


def _status(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return run.status.value if run else "MISSING"


def test_embedded_instance_a_sigkilled_run_is_failed_and_frees_its_slot_for_the_next_run(
    tmp_path: Path, sandbox, monkeypatch
) -> None:
    home = tmp_path / "fitonfhir"
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shipped = yaml.safe_load(
        resources.files("fitonfhir_sandbox").joinpath("dagster_instance.yaml").read_text()
    )
    assert (
        shipped["run_monitoring"]["enabled"] and shipped["run_monitoring"]["free_slots_after_run_end_seconds"]
    )
    shipped["run_monitoring"] |= {"poll_interval_seconds": 2, "free_slots_after_run_end_seconds": 1}
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(shipped))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump({"load_from": [{"python_module": {"module_name": "fitonfhir_dagster.definitions"}}]})
    )
    today = datetime.now(UTC).date()
    env = {
        "FITONFHIR_HOME": str(home),
        **sandbox.env(),
        "FITONFHIR_INITIAL_DAYS": "1",
        "FITONFHIR_START_DATE": (today - timedelta(days=1)).isoformat(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    settings = Settings.from_env()
    with local_services(settings) as running:
        for i in (1, 2):
            onboard_sandbox_user(running.onboarding_url, i)
    sandbox.add_fault(path=DATASETS, delay=1.0, count=None)
    import os
    import sys

    bin_dir = Path(sys.executable).parent
    daemon = ManagedProcess(
        "daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)], os.environ, tmp_path
    )
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        daemon.start()
        try:
            killed = _kill_the_slot_holder(instance, _pid_from_logs(instance))
            sandbox.clear_faults()
            wait_until(
                lambda: _status(instance, killed) == "FAILURE", 60, "the killed run to be marked FAILURE"
            )
            started = time.monotonic()

            def both_done() -> bool:
                runs = [
                    r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name="user_day_import"))
                ]
                return len(runs) == 2 and all(r.is_finished for r in runs)

            wait_until(both_done, 120, "the next run of the pool to finish", interval=1)
            runs = [
                r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name="user_day_import"))
            ]
            other = next(r for r in runs if r.run_id != killed)
            assert other.status == dg.DagsterRunStatus.SUCCESS, daemon.tail()
            assert time.monotonic() - started < 90
            assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        finally:
            daemon.stop()
            sandbox.clear_faults()


def _observation_total(stack: Stack) -> int:
    fhir = FhirClient.from_settings(stack.settings())
    return int(fhir.search_bundle("Observation", {"_summary": "count"})["total"])


def _add_delay(stack: Stack, seconds: float) -> None:
    import requests

    answer = requests.post(
        stack.sandbox_url + "/_sandbox/faults",
        json={"path": DATASETS, "delay": seconds, "count": None},
        timeout=10,
    )
    assert answer.status_code in (200, 201), answer.text


def _clear_faults(stack: Stack) -> None:
    import requests

    requests.delete(stack.sandbox_url + "/_sandbox/faults", timeout=10)


def test_stack_a_killed_run_worker_and_a_killed_daemon_lose_nothing_duplicate_nothing_leak_no_slot() -> None:
    """Production shape: run worker SIGKILLed (slot freed, run retried), then the daemon SIGKILLed and
    restarted mid-run; every user-day ends imported once and the pool is empty."""
    config = StackConfig(
        users=2, days=1, webserver=False, monitoring_poll_seconds=2, free_slots_after_run_end_seconds=1
    )
    with running_stack(config) as stack:
        stack.start_services()
        keys = stack.onboard(2)
        instance = stack.instance()
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        _add_delay(stack, 1.0)
        stack.start_code_server()
        stack.start_daemon()
        killed = _kill_the_slot_holder(instance, stack.run_worker_pid)
        wait_until(lambda: _status(instance, killed) == "FAILURE", 60, "the killed run to be marked FAILURE")
        # the daemon dies too, mid-run of the next one, and comes back
        stack.processes["daemon"].kill()
        _clear_faults(stack)
        stack.start_daemon()
        runs = stack.wait_for_runs(3, 180)  # 2 history runs + the retry of the killed one
        final = final_attempts(runs)
        assert sorted(r.status.value for r in final) == ["SUCCESS", "SUCCESS"], [
            (r.run_id, r.status) for r in runs
        ]
        assert any(r.tags.get("dagster/parent_run_id") == killed for r in runs)
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        # nothing lost, nothing duplicated: the FHIR server holds exactly the archived points, once
        report = stack.report(keys)
        assert all(u.points > 0 for u in report.users)
        assert _observation_total(stack) == report.observations_total == sum(u.points for u in report.users)


def test_two_daemons_dagster_only_logs_it_so_the_stack_refuses_a_second_one() -> None:
    """Dagster 1.13 runs a second daemon on the same instance (it logs "Another SENSOR daemon is still
    sending heartbeats" from its second heartbeat on); `fitonfhir stack` refuses to start one while a daemon
    it did not start beats, and fails its wait when one joins."""
    import pytest

    from fitonfhir_sandbox.stack import StackError

    with running_stack(StackConfig(users=1, days=1, webserver=False)) as stack:
        stack.start_daemon("rogue", guard=False)  # started by mistake, outside the stack's control
        other = wait_until(stack.foreign_daemon, 90, "the other daemon's first heartbeat")
        with pytest.raises(StackError, match=f"another dagster-daemon \\(id {other}\\)"):
            stack.start_daemon()
        assert "daemon" not in stack.processes  # nothing was started
        with pytest.raises(StackError, match="a second dagster-daemon"):
            stack.wait_for_runs(1, 5)


def test_a_sigterm_stops_the_run_after_its_current_user_day_and_the_retry_imports_the_rest() -> None:
    """Issue 9 item 3, SIGTERM (what Kubernetes sends a pod): the run worker stops after the user-day in
    hand instead of looping over every key; what finished stays materialized, the run fails as interrupted
    and run retries import the rest, once. The sandbox FHIR server is slowed so each user-day takes seconds."""
    import os
    import signal

    import requests

    config = StackConfig(
        users=1,
        days=6,
        webserver=False,
        monitoring_poll_seconds=2,
        free_slots_after_run_end_seconds=1,
        env={"FITONFHIR_IMPORT_WORKERS": "1"},  # one user-day in hand at a time
    )
    with running_stack(config) as stack:
        stack.start_services()
        keys = stack.onboard(1)
        instance = stack.instance()
        answer = requests.post(
            stack.sandbox_url + "/_sandbox/faults",
            json={"path": "^/fhir/?$", "method": "POST", "delay": 1.5, "count": None},
            timeout=10,
        )
        assert answer.status_code in (200, 201), answer.text
        stack.start_code_server()
        stack.start_daemon()
        observations = dg.AssetKey("fhir_observations")

        def materialized_in(run_id: str) -> int:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=observations), limit=1000
            ).records
            return sum(1 for r in records if r.run_id == run_id)

        def first_key_done() -> str | None:
            for run in stack.runs():
                if run.status == dg.DagsterRunStatus.STARTED and materialized_in(run.run_id) >= 1:
                    return run.run_id
            return None

        run_id = wait_until(first_key_done, 240, "the history run to materialize its first user-day")
        pid = wait_until(lambda: stack.run_worker_pid(run_id), 30, "the run worker's pid")
        os.kill(pid, signal.SIGTERM)
        done_at_sigterm = materialized_in(run_id)
        wait_until(lambda: not _alive(pid), 60, "the run worker to exit after SIGTERM")
        _clear_faults(stack)

        interrupted = instance.get_run_by_id(run_id)
        assert interrupted is not None and interrupted.status == dg.DagsterRunStatus.FAILURE
        assert interrupted.tags.get("dagster/will_retry") == "true", interrupted.tags
        # one worker, so one user-day was in hand: at most that one finished after the signal
        stopped_after = materialized_in(run_id)
        assert stopped_after <= done_at_sigterm + 1, (stopped_after, done_at_sigterm)
        runs = stack.wait_for_runs(2, 240)
        assert any(r.tags.get("dagster/parent_run_id") == run_id for r in runs), [
            (r.run_id, r.status.value, r.tags.get("dagster/parent_run_id")) for r in runs
        ]
        assert [r.status.value for r in final_attempts(runs)] == ["SUCCESS"]
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        report = stack.report(keys)
        assert report.users[0].points > 0
        assert _observation_total(stack) == report.observations_total == report.users[0].points
        assert stopped_after < len(instance.get_materialized_partitions(observations))  # it did stop


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by the code server) is not running
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
