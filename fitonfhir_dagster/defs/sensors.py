"""``users_sensor``: newly onboarded (or returning) users become partitions and get their history."""

from datetime import UTC, datetime

import dagster as dg

from ..stores.users import UserState, utc_now_iso
from .partitions import USERS, user_partitions
from .resources import ImportOptionsResource, UsersTableResource
from .run_requests import user_history_requests
from .user_days import IMPORT_JOB


@dg.sensor(
    name="users_sensor",
    job_name=IMPORT_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds newly onboarded users as partitions and imports their first days of history.",
)
def users_sensor(
    context: dg.SensorEvaluationContext,
    users_table: UsersTableResource,
    import_options: ImportOptionsResource,
) -> dg.SensorResult:
    options = import_options.settings()
    evaluated_at = utc_now_iso()
    active = users_table.open().list(states=[UserState.ACTIVE])
    known = context.instance.get_dynamic_partitions(USERS)
    today = datetime.now(UTC).date()
    new, requests = user_history_requests(
        known, active, context.cursor, today, options.initial_days, options.start_date
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[user_partitions.build_add_request(new)] if new else [],
        cursor=evaluated_at,
    )
