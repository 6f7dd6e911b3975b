"""Automation: new users get their history, every active user gets yesterday, revoked users get nothing."""

from datetime import UTC, date, datetime

import dagster as dg
import pytest

from fitonfhir_dagster.definitions import defs
from fitonfhir_dagster.defs.resources import resources_from_env
from fitonfhir_dagster.defs.run_requests import (
    DAYS_TAG,
    RANGE_END,
    RANGE_START,
    USER_TAG,
    batches_of_active,
    initial_history,
)
from fitonfhir_dagster.defs.schedules import daily_import_schedule, intraday_refresh_schedule
from fitonfhir_dagster.defs.sensors import users_sensor
from fitonfhir_dagster.stores.users import SqliteUsersTable, UserState


@pytest.fixture
def users(tmp_path):
    return SqliteUsersTable(tmp_path / "users.sqlite3")


def _onboard(users, n):
    return [
        users.upsert_onboarded(google_sub=f"1000{i}", google_issuer="https://sandbox", patient_id=f"p{i}").key
        for i in range(n)
    ]


def _schedule_context(instance, tmp_path, when):
    return dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=when,
        resources=resources_from_env({"FITONFHIR_HOME": str(tmp_path)}),
        repository_def=defs().get_repository_def(),
    )


def test_initial_history_is_the_complete_days_before_today_bounded_by_the_start_date():
    assert initial_history(date(2026, 11, 29), 30, date(2025, 1, 1)) == (
        date(2026, 10, 30),
        date(2026, 11, 28),
    )
    assert initial_history(date(2026, 11, 29), 30, date(2026, 11, 20)) == (
        date(2026, 11, 20),
        date(2026, 11, 28),
    )
    assert initial_history(date(2026, 11, 29), 30, date(2026, 11, 29)) is None


def test_batches_never_span_an_inactive_user_and_respect_the_batch_size():
    keys = ["a", "b", "c", "d", "e", "f"]
    assert batches_of_active(keys, {"a", "b", "c", "e", "f"}, 2) == [("a", "b"), ("c", "c"), ("e", "f")]
    assert batches_of_active(keys, set(), 5) == []


def test_users_sensor_adds_new_active_users_and_requests_their_first_days(tmp_path, users):
    keys = _onboard(users, 3)
    users.set_state(keys[2], UserState.REVOKED, "user initiated")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            resources=resources_from_env({"FITONFHIR_HOME": str(tmp_path)}),
            definitions=defs(),
        )
        result = users_sensor.evaluate_tick(context)
        [add] = result.dynamic_partitions_requests
        assert sorted(add.partition_keys) == sorted(keys[:2])
        assert len(result.run_requests) == 2
        yesterday = datetime.now(UTC).date().toordinal() - 1
        for request in result.run_requests:
            start_day, start_user = request.tags[RANGE_START].split("|")
            end_day, end_user = request.tags[RANGE_END].split("|")
            assert start_user == end_user and start_user in keys[:2]
            assert request.tags[USER_TAG] == start_user  # filterable by user; the per-user run limit applies
            assert request.tags[DAYS_TAG] == f"{start_day}..{end_day}"
            assert date.fromisoformat(end_day).toordinal() == yesterday
            assert date.fromisoformat(end_day).toordinal() - date.fromisoformat(start_day).toordinal() == 29

        instance.add_dynamic_partitions("users", keys[:2])
        again = users_sensor.evaluate_tick(context)
        assert again.run_requests == [] and not again.dynamic_partitions_requests


def test_daily_schedule_requests_the_lookback_days_for_active_users_only_in_batches(tmp_path, users):
    keys = _onboard(users, 4)
    users.set_state(keys[1], UserState.UNAUTHORIZED, "invalid_grant")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", keys)
        context = _schedule_context(instance, tmp_path, datetime(2026, 11, 29, 1, 30, tzinfo=UTC))
        result = daily_import_schedule.evaluate_tick(context)
        ranges = [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests]
        # yesterday and the two days before (FITONFHIR_LOOKBACK_DAYS=3): late uploads are picked up
        assert ranges == [
            (f"2026-11-26|{keys[0]}", f"2026-11-28|{keys[0]}"),
            (f"2026-11-26|{keys[2]}", f"2026-11-28|{keys[3]}"),
        ]
        assert len({r.run_key for r in result.run_requests}) == 2


def test_daily_schedule_skips_when_nobody_is_active(tmp_path, users):
    [key] = _onboard(users, 1)
    users.set_state(key, UserState.REVOKED, "user initiated")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", [key])
        context = _schedule_context(instance, tmp_path, datetime(2026, 11, 29, 1, 30, tzinfo=UTC))
        result = daily_import_schedule.evaluate_tick(context)
        assert result.run_requests == [] and "no active users" in result.skip_message


def test_intraday_refresh_is_off_by_default_and_requests_today_with_an_hourly_run_key(tmp_path, users):
    keys = _onboard(users, 2)
    assert intraday_refresh_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", keys)
        context = _schedule_context(instance, tmp_path, datetime(2026, 11, 29, 14, 0, tzinfo=UTC))
        [request] = intraday_refresh_schedule.evaluate_tick(context).run_requests
        assert request.tags[RANGE_START] == f"2026-11-29|{keys[0]}"
        assert request.tags[RANGE_END] == f"2026-11-29|{keys[1]}"
        assert USER_TAG not in request.tags  # a batch of users: no single user to name
        assert request.run_key.startswith("intraday-2026-11-29T14")


def test_users_sensor_re_imports_the_history_of_a_user_who_comes_back_after_revoking(tmp_path, users):
    [key] = _onboard(users, 1)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", [key])
        context = dg.build_sensor_context(
            instance=instance,
            resources=resources_from_env({"FITONFHIR_HOME": str(tmp_path)}),
            definitions=defs(),
            cursor="2026-01-01T00:00:00Z",
        )
        users.set_state(key, UserState.REVOKED, "user initiated")
        assert users_sensor.evaluate_tick(context).run_requests == []  # revoked: nothing
        user = users.get(key)
        users.upsert_onboarded(google_sub=user.google_sub, google_issuer="https://sandbox", patient_id="p0")
        result = users_sensor.evaluate_tick(context)
        [request] = result.run_requests
        assert request.run_key.startswith(f"reactivated-{key}-")
        assert request.tags[RANGE_START].endswith(f"|{key}") and request.tags[RANGE_END].endswith(f"|{key}")
        assert not result.dynamic_partitions_requests and result.cursor >= users.get(key).state_changed_at
