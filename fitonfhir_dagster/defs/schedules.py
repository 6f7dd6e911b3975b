"""Schedules: every active user's last days each night; optionally today, every few hours."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ..stores.users import UserState
from .partitions import USERS
from .resources import ImportOptionsResource, UsersTableResource
from .run_requests import batches_of_active, range_run_request
from .user_days import IMPORT_JOB

DAILY_CRON = "30 1 * * *"  # 01:30 UTC: yesterday is complete and late phone uploads had a night to arrive
INTRADAY_CRON = "0 6-22/4 * * *"  # every 4 hours during the day: today so far


def active_user_runs(
    context: dg.ScheduleEvaluationContext,
    users_table: UsersTableResource,
    batch_size: int,
    first: date,
    last: date,
    tag: str,
) -> list[dg.RunRequest] | dg.SkipReason:
    """Runs over ``first..last`` for every active user, ``batch_size`` users per run."""
    ordered = context.instance.get_dynamic_partitions(USERS)
    active = {u.key for u in users_table.open().list(states=[UserState.ACTIVE])}
    batches = batches_of_active(ordered, active, batch_size)
    if not batches:
        return dg.SkipReason("no active users")
    return [
        range_run_request(first, last, first_user, last_user, run_key=f"{tag}-{first_user}-{last_user}")
        for first_user, last_user in batches
    ]


@dg.schedule(
    name="daily_import_schedule",
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    job_name=IMPORT_JOB,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The last FITONFHIR_LOOKBACK_DAYS days (late phone uploads) for every active user,"
    " a few users per run.",
)
def daily_import_schedule(
    context: dg.ScheduleEvaluationContext,
    users_table: UsersTableResource,
    import_options: ImportOptionsResource,
) -> list[dg.RunRequest] | dg.SkipReason:
    options = import_options.settings()
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    last = scheduled.astimezone(UTC).date() - timedelta(days=1)
    first = max(options.start_date, last - timedelta(days=options.lookback_days - 1))
    if last < options.start_date:
        return dg.SkipReason(f"{last} is before FITONFHIR_START_DATE {options.start_date}")
    return active_user_runs(
        context, users_table, options.daily_batch_size, first, last, f"daily-{last.isoformat()}"
    )


@dg.schedule(
    name="intraday_refresh_schedule",
    cron_schedule=INTRADAY_CRON,
    execution_timezone="UTC",
    job_name=IMPORT_JOB,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Optional: re-import today so far for every active user (switch on in the UI).",
)
def intraday_refresh_schedule(
    context: dg.ScheduleEvaluationContext,
    users_table: UsersTableResource,
    import_options: ImportOptionsResource,
) -> list[dg.RunRequest] | dg.SkipReason:
    scheduled = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
    day = scheduled.date()
    batch_size = import_options.settings().daily_batch_size
    return active_user_runs(
        context, users_table, batch_size, day, day, f"intraday-{scheduled.strftime('%Y-%m-%dT%H')}"
    )
