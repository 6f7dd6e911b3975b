"""When imports run: new users get their history, every active user gets yesterday each day."""

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from .partitions import USERS, user_partitions
from .resources import FitOnFhirResource
from .stores.users import User, UserState, utc_now_iso

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


def user_history_requests(
    known: Iterable[str],
    active: Iterable[User],
    since: str | None,
    today: date,
    initial_days: int,
    start: date,
) -> tuple[list[str], list[dg.RunRequest]]:
    """New partitions and history runs: for new users, and for known users re-activated after ``since``

    (a user back from unauthorized/revoked gets the days missed meanwhile, up to ``initial_days``).
    """
    known_set = set(known)
    new = [u.key for u in active if u.key not in known_set]
    window = initial_history(today, initial_days, start)
    if not window:
        return new, []
    requests = [range_run_request(window[0], window[1], key, key, run_key=f"initial-{key}") for key in new]
    if since is not None:
        for user in active:
            if user.key in known_set and user.state_changed_at >= since:
                run_key = f"reactivated-{user.key}-{user.state_changed_at}"
                requests.append(range_run_request(window[0], window[1], user.key, user.key, run_key=run_key))
    return new, requests


def build_automation(import_job, start: date, initial_days: int, lookback_days: int, batch: int):
    def day_runs(
        context: dg.ScheduleEvaluationContext, fitonfhir: FitOnFhirResource, first: date, last: date, tag: str
    ):
        ordered = context.instance.get_dynamic_partitions(USERS)
        active = {u.key for u in fitonfhir.users.list(states=[UserState.ACTIVE])}
        batches = batches_of_active(ordered, active, batch)
        if not batches:
            return dg.SkipReason("no active users")
        return [
            range_run_request(first, last, first_user, last_user, run_key=f"{tag}-{first_user}-{last_user}")
            for first_user, last_user in batches
        ]

    @dg.sensor(
        name="users_sensor",
        job=import_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds newly onboarded users as partitions and imports their first days of history.",
    )
    def users_sensor(context: dg.SensorEvaluationContext, fitonfhir: FitOnFhirResource) -> dg.SensorResult:
        evaluated_at = utc_now_iso()
        active = fitonfhir.users.list(states=[UserState.ACTIVE])
        known = context.instance.get_dynamic_partitions(USERS)
        today = datetime.now(UTC).date()
        new, requests = user_history_requests(known, active, context.cursor, today, initial_days, start)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[user_partitions.build_add_request(new)] if new else [],
            cursor=evaluated_at,
        )

    @dg.schedule(
        name="daily_import_schedule",
        cron_schedule=DAILY_CRON,
        execution_timezone="UTC",
        job=import_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The last FITONFHIR_LOOKBACK_DAYS days (late phone uploads) for every active user,"
        " a few users per run.",
    )
    def daily_import_schedule(context: dg.ScheduleEvaluationContext, fitonfhir: FitOnFhirResource):
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        last = scheduled.astimezone(UTC).date() - timedelta(days=1)
        first = max(start, last - timedelta(days=lookback_days - 1))
        if last < start:
            return dg.SkipReason(f"{last} is before FITONFHIR_START_DATE {start}")
        return day_runs(context, fitonfhir, first, last, f"daily-{last.isoformat()}")

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
        return day_runs(context, fitonfhir, day, day, f"intraday-{scheduled.strftime('%Y-%m-%dT%H')}")

    return users_sensor, daily_import_schedule, intraday_refresh_schedule
