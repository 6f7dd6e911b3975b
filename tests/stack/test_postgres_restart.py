"""Issue 12 item 5, the last fault: PostgreSQL restarted under load, with the real processes of
``fitonfhir stack`` (code server, daemon, webserver, onboarding app, run workers).

The users_sensor's history runs are in flight (the sandbox delays each dataset request, the google_fit_api
pool has one slot) when PostgreSQL is restarted (fast shutdown: every client connection is dropped). Then:
the run in flight ends, either by itself or failed by run monitoring and retried; a user onboarded after the
restart (the onboarding app's users table) gets a history run that the daemon queues, launches and sees
succeed (daemon, code server and run coordinator reconnected); the webserver answers GraphQL from the
restarted database; nothing is lost or duplicated (the FHIR server holds exactly the archived points) and
no pool slot is leaked.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from fitonfhir_dagster.defs.run_requests import USER_TAG
from fitonfhir_sandbox.stack import StackConfig, final_attempts, running_stack, wait_until
from tests.stack.test_run_faults import POOL, _add_delay, _clear_faults, _observation_total

RUNS_QUERY = """
query Runs {
  runsOrError(filter: {pipelineName: "user_day_import"}) {
    __typename
    ... on Runs { results { runId status } }
  }
}
"""


def _graphql_runs(url: str, dropped: list[str] | None = None) -> dict[str, str] | None:
    """The runs the webserver sees ({run id: status}). With ``dropped``: None for an answer that is the
    dropped pooled connection's error (its message is appended), so that the caller can poll."""
    answer = requests.post(url + "/graphql", json={"query": RUNS_QUERY}, timeout=30)
    body = answer.json()
    if dropped is not None and body.get("errors"):
        message = body["errors"][0]["message"]
        assert "server closed the connection unexpectedly" in message, body
        dropped.append(message)
        return None
    assert answer.status_code == 200 and not body.get("errors"), answer.text
    result = body["data"]["runsOrError"]
    assert result["__typename"] == "Runs", result
    return {r["runId"]: r["status"] for r in result["results"]}


def _failure(instance: Any, run_id: str) -> list[str]:
    """What a failed run's log says went wrong (step and run failures, engine errors)."""
    lines = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE", "ENGINE_EVENT"):
            if event.event_type_value == "ENGINE_EVENT" and entry.level < 40:
                continue
            lines.append(f"{event.event_type_value}: {entry.message[:300]}")
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                lines.append(error.to_string()[-1500:])
    return lines


def test_postgres_restarted_under_load_the_services_reconnect_and_nothing_is_lost_or_duplicated() -> None:
    config = StackConfig(
        users=2, days=1, webserver=True, monitoring_poll_seconds=2, free_slots_after_run_end_seconds=1
    )
    with running_stack(config) as stack:
        stack.start_services()
        keys = stack.onboard(2)
        instance = stack.instance()
        instance.event_log_storage.set_concurrency_slots(POOL, 1)
        _add_delay(stack, 1.0)
        stack.start_dagster()
        before = _graphql_runs(stack.webserver_url)  # answering before the restart
        assert before is not None

        def in_flight() -> str | None:
            claimed = instance.event_log_storage.get_concurrency_info(POOL).claimed_slots
            return claimed[0].run_id if claimed else None

        running = wait_until(in_flight, 180, "a history run to hold the google_fit_api slot")
        restarted_at = time.time()
        stack.pg.restart(down_seconds=1.0)
        _clear_faults(stack)

        # every service process is still up: none of them died of the dropped connections
        dead = [name for name, p in stack.processes.items() if not p.alive()]
        assert not dead, {name: stack.processes[name].tail() for name in dead}

        # a new user after the restart: onboarding app (users table) -> users_sensor -> queued, launched
        keys += stack.onboard(1, first=3)
        for key in keys:  # each user's history run, retries included
            stack.wait_for_runs(1, 300, tags={USER_TAG: key})
        runs = stack.wait_for_runs(3, 60)
        final = final_attempts(runs)
        # Each user's history run succeeded (retries included). A sensor tick whose record the restart cut
        # off is evaluated again, so a user may get a second run: sensors are at-least-once, the import is
        # idempotent, and the FHIR total below shows that nothing was written twice.
        assert {r.tags.get(USER_TAG) for r in final} == set(keys), [r.tags for r in final]
        assert all(r.status.value == "SUCCESS" for r in final), [
            (r.run_id, r.status.value, r.tags.get("dagster/parent_run_id"), _failure(instance, r.run_id))
            for r in runs
        ]
        # the run that was in flight either finished or was failed and retried to success
        interrupted = instance.get_run_by_id(running)
        if interrupted.status.value != "SUCCESS":
            assert any(r.tags.get("dagster/parent_run_id") == running for r in runs), interrupted.status
        # the daemon beats again after the restart
        wait_until(
            lambda: any(h.timestamp > restarted_at for h in instance.get_daemon_heartbeats().values()),
            90,
            "a daemon heartbeat after the restart",
        )
        # the webserver reads the restarted database: it sees every run with its final status
        # Dagster 1.13's webserver keeps one pooled connection per storage (optimize_for_webserver: a
        # QueuePool without pre-ping), so the first request that draws a connection from before the restart
        # fails with it (HTTP 500); SQLAlchemy then invalidates that pool and the next request reconnects.
        dropped: list[str] = []
        seen = wait_until(
            lambda: _graphql_runs(stack.webserver_url, dropped), 60, "the webserver to answer GraphQL"
        )
        assert len(dropped) <= 3, dropped  # at most one per storage (runs, event log, schedules)
        assert set(before) <= set(seen)
        assert {r.run_id: r.status.value for r in runs}.items() <= seen.items()
        assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
        report = stack.report(keys)
        assert all(u.points > 0 for u in report.users)
        assert _observation_total(stack) == report.observations_total == sum(u.points for u in report.users)
        dead = [name for name, p in stack.processes.items() if not p.alive()]
        assert not dead, {name: stack.processes[name].tail() for name in dead}
