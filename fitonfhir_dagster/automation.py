"""When imports run: new users get their history, every active user gets yesterday each day."""

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from .partitions import USERS, user_partitions
from .resources import FitOnFhirResource
from .stores.users import UserState

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
DAILY_CRON = "30 1 * * *"  # 01:30 UTC: yesterday is complete and late phone uploads had a night to arrive
INTRADAY_CRON = "0 6-22/4 * * *"  # every 4 hours during the day: today so far


def range_run_request(
    first_day: date, last_day: date, first_user: str, last_user: str, run_key: str
) -> dg.RunRequest:
    """One run covering a rectangle of ``date x user`` keys (a contiguous user range in partition order)."""
    return dg.RunRequest(
        run_key=run_key,
        tags={
            RANGE_START: f"{first_day.isoformat()}|{first_user}",
            RANGE_END: f"{last_day.isoformat()}|{last_user}",
        },
    )


def initial_history(today: date, initial_days: int, start: date) -> tuple[date, date] | None:
    """The first import window of a new user: the ``initial_days`` complete days before today."""
    last = today - timedelta(days=1)
    first = max(start, today - timedelta(days=initial_days))
    return (first, last) if first <= last else None


def batches_of_active(
    ordered_keys: Sequence[str], active: set[str], batch_size: int
) -> list[tuple[str, str]]:
    """Contiguous runs of active users, in partition order, at most ``batch_size`` users each.

    A range run covers every key between its ends, so an inactive user splits a batch rather than
    being imported by accident.
    """
    batches: list[tuple[str, str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in active:
            current.append(key)
            if len(current) == batch_size:
                batches.append((current[0], current[-1]))
                current = []
        elif current:
            batches.append((current[0], current[-1]))
            current = []
    if current:
        batches.append((current[0], current[-1]))
    return batches


def new_user_requests(
    known: Iterable[str], active: Iterable[str], today: date, initial_days: int, start: date
) -> tuple[list[str], list[dg.RunRequest]]:
    known_set = set(known)
    new = [key for key in active if key not in known_set]
    requests = []
    window = initial_history(today, initial_days, start)
    if window:
        for key in new:
            requests.append(range_run_request(window[0], window[1], key, key, run_key=f"initial-{key}"))
    return new, requests


def build_automation(import_job, start: date, initial_days: int, batch: int):
    def day_runs(context: dg.ScheduleEvaluationContext, fitonfhir: FitOnFhirResource, day: date, tag: str):
        ordered = context.instance.get_dynamic_partitions(USERS)
        active = {u.key for u in fitonfhir.users.list(states=[UserState.ACTIVE])}
        batches = batches_of_active(ordered, active, batch)
        if not batches:
            return dg.SkipReason("no active users")
        return [
            range_run_request(day, day, first, last, run_key=f"{tag}-{first}-{last}")
            for first, last in batches
        ]

    @dg.sensor(
        name="users_sensor",
        job=import_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds newly onboarded users as partitions and imports their first days of history.",
    )
    def users_sensor(context: dg.SensorEvaluationContext, fitonfhir: FitOnFhirResource) -> dg.SensorResult:
        active = [u.key for u in fitonfhir.users.list(states=[UserState.ACTIVE])]
        known = context.instance.get_dynamic_partitions(USERS)
        today = datetime.now(UTC).date()
        new, requests = new_user_requests(known, active, today, initial_days, start)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[user_partitions.build_add_request(new)] if new else [],
        )

    @dg.schedule(
        name="daily_import_schedule",
        cron_schedule=DAILY_CRON,
        execution_timezone="UTC",
        job=import_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Yesterday for every active user, a few users per run.",
    )
    def daily_import_schedule(context: dg.ScheduleEvaluationContext, fitonfhir: FitOnFhirResource):
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        day = scheduled.astimezone(UTC).date() - timedelta(days=1)
        if day < start:
            return dg.SkipReason(f"{day} is before FITONFHIR_START_DATE {start}")
        return day_runs(context, fitonfhir, day, f"daily-{day.isoformat()}")

    @dg.schedule(
        name="intraday_refresh_schedule",
        cron_schedule=INTRADAY_CRON,
        execution_timezone="UTC",
        job=import_job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Optional: re-import today so far for every active user (switch on in the UI).",
    )
    def intraday_refresh_schedule(context: dg.ScheduleEvaluationContext, fitonfhir: FitOnFhirResource):
        scheduled = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
        day = scheduled.date()
        return day_runs(context, fitonfhir, day, f"intraday-{scheduled.strftime('%Y-%m-%dT%H')}")

    return users_sensor, daily_import_schedule, intraday_refresh_schedule
