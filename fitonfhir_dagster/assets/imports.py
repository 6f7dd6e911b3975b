"""Raw Fit datasets and the MedTech device messages built from them, per (day, user).

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import dagster as dg

from ..partitions import user_day_partitions
from ..pipeline.datasets import fetch_user_day
from ..pipeline.messages import build_user_day_messages
from ..resources import FitOnFhirResource
from .metadata import datasets_metadata, messages_metadata
from .userdays import StepOutcome, run_per_user_day

# Google outages and 429 storms last minutes, not seconds; consent errors never retry (Failure).
FETCH_RETRY = dg.RetryPolicy(
    max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)

POINTS_IN_DAY = "points_within_partition_day"
NO_BAD_POINTS = "no_malformed_points"
EXACTLY_ONCE = "every_point_in_exactly_one_message"


def _finish(context: dg.AssetExecutionContext, outcome: StepOutcome, metadata_of) -> None:
    for key, summary in outcome.done.items():
        context.add_asset_metadata(metadata_of(summary), partition_key=key)
    if outcome.failed:
        # Keys that succeeded keep their materialization even though the step fails for the others.
        for key, summary in outcome.done.items():
            context.log_event(
                dg.AssetMaterialization(context.asset_key, partition=key, metadata=metadata_of(summary))
            )
        outcome.raise_if_failed()


@dg.asset(
    partitions_def=user_day_partitions,
    pool="google_fit_api",
    retry_policy=FETCH_RETRY,
    backfill_policy=BACKFILL,
    group_name="fit_on_fhir",
    kinds={"googlefit", "json"},
    check_specs=[
        dg.AssetCheckSpec(POINTS_IN_DAY, asset="fit_datasets"),
        dg.AssetCheckSpec(NO_BAD_POINTS, asset="fit_datasets"),
    ],
)
def fit_datasets(context: dg.AssetExecutionContext, fitonfhir: FitOnFhirResource) -> dg.MaterializeResult:
    """Every selected Google Fit stream of the user for the UTC day, archived as fetched."""
    ports = fitonfhir.ports
    outcome = run_per_user_day(context, lambda day, user: fetch_user_day(ports, day, user))
    _finish(context, outcome, datasets_metadata)
    outside = {k: s.outside_day for k, s in outcome.done.items() if s.outside_day}
    bad = {k: s.bad_points for k, s in outcome.done.items() if s.bad_points}
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=NO_BAD_POINTS,
                passed=not bad,
                severity=dg.AssetCheckSeverity.WARN,
                description="Malformed points are dead-lettered in the archive (badPoints) with their reason.",
                metadata={"bad_points_by_partition": dg.MetadataValue.json(bad)},
            ),
            dg.AssetCheckResult(
                check_name=POINTS_IN_DAY,
                passed=not outside,
                metadata={"points_outside_day": dg.MetadataValue.json(outside)},
            ),
        ]
    )


@dg.asset(
    deps=[fit_datasets],
    partitions_def=user_day_partitions,
    backfill_policy=BACKFILL,
    group_name="fit_on_fhir",
    kinds={"azure", "json"},
    check_specs=[dg.AssetCheckSpec(EXACTLY_ONCE, asset="device_messages")],
)
def device_messages(context: dg.AssetExecutionContext, fitonfhir: FitOnFhirResource) -> dg.MaterializeResult:
    """MedTech device messages (one per dataset page), archived as NDJSON and sent to Event Hub if configured."""
    ports = fitonfhir.ports
    publisher = fitonfhir.event_hub
    outcome = run_per_user_day(
        context, lambda day, user: build_user_day_messages(ports, day, user, publisher)
    )
    _finish(context, outcome, messages_metadata)
    wrong = {
        k: {"missing": s.missing_points, "extra": s.duplicated_points}
        for k, s in outcome.done.items()
        if s.missing_points or s.duplicated_points
    }
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=EXACTLY_ONCE,
                passed=not wrong,
                metadata={"mismatches": dg.MetadataValue.json(wrong)},
            )
        ]
    )
