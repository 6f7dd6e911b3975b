"""The import of a range of (day, user) keys: fetch -> device messages -> Observations, key by key.

One multi-asset instead of three chained assets so that a failing user never blocks the others of a run:
each key goes through every selected step before the next key starts, failures are isolated per key, the
keys that succeeded are materialized, and only then does the step fail naming the failed keys.
`can_subset` keeps every asset materializable alone; each step reads only what the previous one archived.
ARCHITECTURE.md gives the measured reasons for one multi-asset rather than three assets.

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import dagster as dg

from ..pipeline.conversion_templates import templates_for_conversion
from ..pipeline.datasets import fetch_user_day
from ..pipeline.messages import build_user_day_messages
from ..pipeline.observations import convert_user_day
from ..pipeline.step_errors import TransientUserDayError, UserDayError
from ..settings import Settings
from .catalog import OWNERS, TAGS, code_reference, definition_metadata
from .checks import CHECK_SPECS, datasets_checks, messages_checks, observations_checks
from .freshness import FRESHNESS_CHECK
from .metadata import datasets_metadata, messages_metadata, observations_metadata
from .partitions import split_user_day, user_day_partitions
from .resources import (
    ArchiveResource,
    EventHubResource,
    FhirServerResource,
    GoogleFitResource,
    ImportOptionsResource,
    TokenVaultResource,
    UsersTableResource,
    open_ports,
)

FIT_DATASETS, DEVICE_MESSAGES, FHIR_OBSERVATIONS = "fit_datasets", "device_messages", "fhir_observations"
IMPORT_JOB = "user_day_import"
GROUP = "fit_on_fhir"

# Backfills from the UI: at most a month of keys per run, so one run stays a few minutes.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)
# The daily import starts 01:30 UTC; by 06:00 some user-day must have been written in the last day.
# Per-user freshness: the yesterday_imported_for_every_active_user check (freshness.py).
FRESHNESS_POLICY = dg.FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=24))


def import_retry_policy(first_delay_seconds: int) -> dg.RetryPolicy:
    """Google and FHIR outages last minutes, not seconds; consent errors never retry (Failure)."""
    return dg.RetryPolicy(
        max_retries=3, delay=first_delay_seconds, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    )


def build_user_day_steps(settings: Settings) -> dg.AssetsDefinition:
    """The multi-asset over ``user_day_partitions(FITONFHIR_START_DATE)``; partitions, retries, kinds and
    definition metadata are the deployment's, fixed when the code location loads."""
    metadata = {**definition_metadata(settings), **code_reference(build_user_day_steps)}
    archive_kind = (
        {"azureblob"} if settings.azure_blob_endpoint or settings.azure_storage_connection_string else set()
    )

    @dg.multi_asset(
        name="user_day_steps",
        specs=[
            dg.AssetSpec(
                FIT_DATASETS,
                description="Every selected Google Fit stream of the user for the UTC day, archived as fetched.",
                kinds={"googlefit", "json"} | archive_kind,
                metadata=metadata,
                owners=OWNERS,
                tags=TAGS,
                group_name=GROUP,
            ),
            dg.AssetSpec(
                DEVICE_MESSAGES,
                deps=[FIT_DATASETS],
                description="MedTech device messages (one per dataset page), archived as NDJSON; sent to Event"
                " Hub when configured.",
                kinds={"json"}
                | ({"azure", "eventhubs"} if settings.eventhub_enabled else set())
                | archive_kind,
                metadata=metadata,
                owners=OWNERS,
                tags=TAGS,
                group_name=GROUP,
            ),
            dg.AssetSpec(
                FHIR_OBSERVATIONS,
                deps=[DEVICE_MESSAGES, "medtech_templates"],
                description="Observations built with MedTech's rules, written to the FHIR server (no-op if"
                " unchanged).",
                kinds={"fhir"},
                metadata=metadata,
                freshness_policy=FRESHNESS_POLICY,
                owners=OWNERS,
                tags=TAGS,
                group_name=GROUP,
            ),
        ],
        check_specs=CHECK_SPECS,
        can_subset=True,
        partitions_def=user_day_partitions(settings.start_date),
        pool="google_fit_api",
        retry_policy=import_retry_policy(settings.retry_delay_seconds),
        backfill_policy=BACKFILL_POLICY,
    )
    def user_day_steps(
        context: dg.AssetExecutionContext,
        google_fit: GoogleFitResource,
        import_options: ImportOptionsResource,
        users_table: UsersTableResource,
        token_vault: TokenVaultResource,
        archive: ArchiveResource,
        fhir_server: FhirServerResource,
        event_hub: EventHubResource,
    ) -> Iterator[Any]:
        selected = {key.to_user_string() for key in context.selected_asset_keys}
        ports = open_ports(google_fit, import_options, users_table, token_vault, archive)
        publisher = event_hub.publisher() if DEVICE_MESSAGES in selected else None
        fhir: Any = None
        templates: Any = None
        if FHIR_OBSERVATIONS in selected:  # compiled once per run
            fhir, templates = fhir_server.client(), templates_for_conversion(ports)

        datasets: dict[str, Any] = {}
        messages: dict[str, Any] = {}
        observations: dict[str, Any] = {}
        failed: dict[str, UserDayError] = {}
        for key in context.partition_keys:
            day, user = split_user_day(key)
            step = ""
            try:
                if FIT_DATASETS in selected:
                    step = FIT_DATASETS
                    datasets[key] = fetch_user_day(ports, day, user)
                if DEVICE_MESSAGES in selected:
                    step = DEVICE_MESSAGES
                    messages[key] = build_user_day_messages(ports, day, user, publisher)
                if FHIR_OBSERVATIONS in selected:
                    step = FHIR_OBSERVATIONS
                    observations[key] = convert_user_day(ports, fhir, templates, day, user)
            except UserDayError as err:
                failed[key] = err
            except Exception as exc:  # an SDK or storage failure of one key must not lose the others
                context.log.exception(f"{step} failed for {key}")
                failed[key] = TransientUserDayError(user, day, f"{step}: {type(exc).__name__}: {exc}")
            if key in failed:
                context.log.error(str(failed[key]))

        if failed:
            yield from _materialize_then_fail(selected, datasets, messages, observations, failed)
            return
        checks = {check.name for check in context.selected_asset_check_keys}
        if FIT_DATASETS in selected:
            record_metadata(context, FIT_DATASETS, datasets, datasets_metadata)
            yield checked(FIT_DATASETS, datasets_checks(datasets), checks)
        if DEVICE_MESSAGES in selected:
            record_metadata(context, DEVICE_MESSAGES, messages, messages_metadata)
            yield checked(DEVICE_MESSAGES, messages_checks(messages), checks)
        if FHIR_OBSERVATIONS in selected:
            record_metadata(context, FHIR_OBSERVATIONS, observations, observations_metadata)
            yield checked(FHIR_OBSERVATIONS, observations_checks(observations, fhir), checks)

    return user_day_steps


def record_metadata(
    context: dg.AssetExecutionContext, asset: str, summaries: dict[str, Any], metadata: Callable[[Any], Any]
) -> None:
    for key, summary in summaries.items():
        context.add_asset_metadata(metadata(summary), asset_key=asset, partition_key=key)


def checked(
    asset: str, results: list[dg.AssetCheckResult], selected_checks: set[str]
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        asset_key=asset, check_results=[r for r in results if r.check_name in selected_checks]
    )


def _materialize_then_fail(
    selected: set[str],
    datasets: dict[str, Any],
    messages: dict[str, Any],
    observations: dict[str, Any],
    failed: dict[str, UserDayError],
) -> Iterator[Any]:
    """Record what succeeded (per step and key), then fail naming the failed keys; retry only if useful."""
    done: list[tuple[str, dict[str, Any], Callable[[Any], Any]]] = [
        (FIT_DATASETS, datasets, datasets_metadata),
        (DEVICE_MESSAGES, messages, messages_metadata),
        (FHIR_OBSERVATIONS, observations, observations_metadata),
    ]
    succeeded: set[str] = set()
    for asset, summaries, metadata in done:
        if asset in selected:
            for key, summary in summaries.items():
                yield dg.AssetMaterialization(asset, partition=key, metadata=metadata(summary))
            succeeded |= set(summaries)
    total = len(succeeded | set(failed))
    raise dg.Failure(
        description=f"{len(failed)} of {total} user-days failed:\n"
        + "\n".join(str(e) for e in failed.values()),
        metadata={"failed_partitions": dg.MetadataValue.json(sorted(failed))},
        allow_retries=any(err.retryable for err in failed.values()),
    )


@dg.definitions
def user_day_defs() -> dg.Definitions:
    """Partitions and retries are fixed when the code location loads, from the deployment's settings."""
    steps = build_user_day_steps(Settings.from_env())
    job = dg.define_asset_job(
        IMPORT_JOB,
        # The freshness check judges all users at a deadline; it has its own job and schedule.
        selection=dg.AssetSelection.assets(steps)
        - dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey(FHIR_OBSERVATIONS), FRESHNESS_CHECK)),
        executor_def=dg.in_process_executor,
        description="Fetch, archive and convert Google Fit data for a range of (day, user) keys.",
    )
    return dg.Definitions(assets=[steps], jobs=[job])
