"""The import of a range of (day, user) keys: fetch -> device messages -> Observations, key by key.

One multi-asset instead of three chained assets so that a failing user never blocks the others of a run:
each key goes through every selected step before the next key starts, failures are isolated per key, the
keys that succeeded are materialized, and only then does the step fail naming the failed keys.
`can_subset` keeps every asset materializable alone; each step reads only what the previous one archived.

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import traceback
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from ..config import Settings
from ..partitions import split_user_day, user_day_partitions
from ..pipeline.errors import UserDayError
from ..pipeline.runner import UserDayOutcome, run_user_days
from ..pipeline.templates import stored_templates_digest, templates_for_conversion
from ..resources import FitOnFhirResource
from .checks import CHECK_SPECS, datasets_checks, messages_checks, observations_checks
from .metadata import datasets_metadata, messages_metadata, observations_metadata

FIT_DATASETS, DEVICE_MESSAGES, FHIR_OBSERVATIONS = "fit_datasets", "device_messages", "fhir_observations"
STEPS = (FIT_DATASETS, DEVICE_MESSAGES, FHIR_OBSERVATIONS)

# Google and FHIR outages last minutes, not seconds; consent errors never retry (Failure).
IMPORT_RETRY = dg.RetryPolicy(
    max_retries=3,
    delay=Settings.from_env().retry_delay_seconds,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)
METADATA: dict[str, Callable[[Any], dict[str, dg.MetadataValue]]] = {
    FIT_DATASETS: datasets_metadata,
    DEVICE_MESSAGES: messages_metadata,
    FHIR_OBSERVATIONS: observations_metadata,
}


@dg.multi_asset(
    name="user_day_steps",
    specs=[
        dg.AssetSpec(
            FIT_DATASETS,
            description="Every selected Google Fit stream of the user for the UTC day, archived as fetched.",
            group_name="fit_on_fhir",
            kinds={"googlefit", "json"},
        ),
        dg.AssetSpec(
            DEVICE_MESSAGES,
            deps=[FIT_DATASETS],
            description="MedTech device messages (one per dataset page), archived as NDJSON; sent to Event Hub"
            " when configured.",
            group_name="fit_on_fhir",
            kinds={"azure", "json"},
        ),
        dg.AssetSpec(
            FHIR_OBSERVATIONS,
            deps=[DEVICE_MESSAGES, "medtech_templates"],
            description="Observations built with MedTech's rules, written to the FHIR server (no-op if unchanged).",
            group_name="fit_on_fhir",
            kinds={"fhir"},
        ),
    ],
    check_specs=CHECK_SPECS,
    can_subset=True,
    partitions_def=user_day_partitions,
    pool="google_fit_api",
    retry_policy=IMPORT_RETRY,
    backfill_policy=BACKFILL,
)
def user_day_steps(context: dg.AssetExecutionContext, fitonfhir: FitOnFhirResource) -> Iterator[Any]:
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    steps = [step for step in STEPS if step in selected]
    ports = fitonfhir.ports
    # --- throughput: one window fetch per user, users side by side (pipeline.runner) -------------------
    keys = {split_user_day(key): key for key in context.partition_keys}
    templates = digest = None
    if FHIR_OBSERVATIONS in steps:
        templates = templates_for_conversion(ports)
        digest = stored_templates_digest(ports)
    done: dict[str, dict[str, Any]] = {step: {} for step in steps}
    failed: dict[str, UserDayError] = {}

    def record(outcome: UserDayOutcome) -> None:
        key = keys[(outcome.day, outcome.user_key)]
        for step, summary in outcome.summaries.items():
            done[step][key] = summary
        if outcome.error is None:
            context.log.info(f"{key}: {', '.join(steps)} done")
            return
        failed[key] = outcome.error
        if outcome.cause is not None:
            trace = "".join(traceback.format_exception(outcome.cause))
            context.log.error(f"{key} failed unexpectedly:\n{trace}")
        context.log.error(str(outcome.error))

    run_user_days(
        ports,
        keys,
        steps,
        fhir=fitonfhir.fhir if FHIR_OBSERVATIONS in steps else None,
        templates=templates,
        templates_digest=digest,
        publisher=fitonfhir.event_hub if DEVICE_MESSAGES in steps else None,
        on_done=record,
    )
    # --- end of throughput hunk ---------------------------------------------------------------------------

    if failed:
        yield from _fail_after_materializing(done, failed)
        return
    checks = {check.name for check in context.selected_asset_check_keys}
    for step in steps:
        for key, summary in done[step].items():
            context.add_asset_metadata(METADATA[step](summary), asset_key=step, partition_key=key)
        results = _check_results(step, done[step], fitonfhir)
        yield dg.MaterializeResult(
            asset_key=step, check_results=[r for r in results if r.check_name in checks]
        )


def _check_results(step: str, summaries: dict[str, Any], fitonfhir: FitOnFhirResource) -> list[Any]:
    if step == FIT_DATASETS:
        return datasets_checks(summaries)
    if step == DEVICE_MESSAGES:
        return messages_checks(summaries)
    return observations_checks(summaries, fitonfhir.fhir)


def _fail_after_materializing(
    done: dict[str, dict[str, Any]], failed: dict[str, UserDayError]
) -> Iterator[Any]:
    """Record what succeeded (per step and key), then fail naming the failed keys; retry only if useful."""
    for step, summaries in done.items():
        for key, summary in summaries.items():
            yield dg.AssetMaterialization(step, partition=key, metadata=METADATA[step](summary))
    total = len({key for summaries in done.values() for key in summaries} | set(failed))
    raise dg.Failure(
        description=f"{len(failed)} of {total} user-days failed:\n"
        + "\n".join(str(e) for e in failed.values()),
        metadata={"failed_partitions": dg.MetadataValue.json(sorted(failed))},
        allow_retries=any(err.retryable for err in failed.values()),
    )
