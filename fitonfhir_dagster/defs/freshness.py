"""Is yesterday imported for every active user? A check that reads the instance, so it runs alone."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from ..stores.users import UserState
from .resources import UsersTableResource

FRESHNESS_CHECK = "yesterday_imported_for_every_active_user"
FRESHNESS_JOB = "freshness_check"
# The daily import starts at 01:30 UTC and re-imports the last days; by 06:00 yesterday must be there.
FRESHNESS_CRON = "0 6 * * *"


@dg.asset_check(
    asset="fhir_observations",
    name=FRESHNESS_CHECK,
    description="By 06:00 UTC, yesterday's fhir_observations partition is materialized for every user"
    " who was active and onboarded before yesterday ended. Reads the Dagster instance and the users table,"
    " so it can be run alone.",
)
def yesterday_imported_for_every_active_user(
    context: dg.AssetCheckExecutionContext, users_table: UsersTableResource
) -> dg.AssetCheckResult:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    cutoff = (yesterday + timedelta(days=1)).isoformat()
    due = [u.key for u in users_table.open().list(states=[UserState.ACTIVE]) if u.created_at < cutoff]
    done = {str(p) for p in context.instance.get_materialized_partitions(dg.AssetKey("fhir_observations"))}
    missing = sorted(key for key in due if f"{yesterday.isoformat()}|{key}" not in done)
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "day": yesterday.isoformat(),
            "active_users": dg.MetadataValue.int(len(due)),
            "users_missing_yesterday": dg.MetadataValue.int(len(missing)),
            "missing": dg.MetadataValue.json(missing),
        },
    )


freshness_check_job = dg.define_asset_job(
    FRESHNESS_JOB,
    selection=dg.AssetSelection.checks(yesterday_imported_for_every_active_user),
    description="Runs the freshness check of fhir_observations.",
)

freshness_check_schedule = dg.ScheduleDefinition(
    name="freshness_check_schedule",
    cron_schedule=FRESHNESS_CRON,
    execution_timezone="UTC",
    job=freshness_check_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Checks at 06:00 UTC that yesterday was imported for every active user.",
)
