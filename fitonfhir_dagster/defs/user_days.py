"""The import of a range of (day, user) keys: fetch -> device messages -> Observations.

One multi-asset instead of three chained assets so that a failing user never blocks the others of a run:
``pipeline.runner`` takes each user's days through every selected step (users side by side, one window
fetch per user), each user-day is materialized as soon as it is done, failures stay with their user-day,
and only at the end does the step fail naming the failed keys. `can_subset` keeps every asset
materializable alone; each step reads only what the previous one archived. ARCHITECTURE.md gives the
measured reasons for one multi-asset rather than three assets.

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg

from ..pipeline.conversion_templates import stored_templates_digest, templates_for_conversion
from ..pipeline.runner import DEVICE_MESSAGES, FHIR_OBSERVATIONS, FIT_DATASETS, STEPS, iter_user_days
from ..pipeline.step_errors import UserDayError, UserNotImportable
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
    GoogleResource,
    ImportOptionsResource,
    TokenVaultResource,
    UsersTableResource,
    open_step_stores,
)

CHECKS_NEED_KEYS = (
    "The checks of fit_datasets, device_messages and fhir_observations are computed while user-days are"
    " imported; run them by materializing a partition or a range (Materialize, or a backfill), not alone."
)
IMPORT_JOB = "user_day_import"
GROUP = "fit_on_fhir"

# Backfills from the UI: at most a month of keys per run, so one run stays a few minutes.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=31)
# The daily import starts 01:30 UTC; by 06:00 some user-day must have been written in the last day.
# Per-user freshness: the yesterday_imported_for_every_active_user check (freshness.py).
FRESHNESS_POLICY = dg.FreshnessPolicy.cron(deadline_cron="0 6 * * *", lower_bound_delta=timedelta(hours=24))


IMPORT_MAX_RETRIES = 3


def import_retry_policy(first_delay_seconds: int) -> dg.RetryPolicy:
    """Google and FHIR outages last minutes, not seconds; consent errors never retry (Failure)."""
    return dg.RetryPolicy(
        max_retries=IMPORT_MAX_RETRIES,
        delay=first_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


# A run tag Dagster's run retries read when the run fails (documented with run_retries).
RUN_RETRY_ON_STEP_FAILURE = "dagster/retry_on_asset_or_op_failure"


def retry_or_raise(context: dg.AssetExecutionContext, policy: dg.RetryPolicy, exc: Exception) -> None:
    """Retry the step after ``exc`` by ``policy`` (RetryRequested), or raise ``exc`` itself when the policy is
    spent or the error is a ``Failure`` that forbids retries.

    The policy is applied here, not given to the op: Dagster turns an interrupt (SIGTERM, what Kubernetes
    sends before it kills a pod) of an op with a retry policy into a retry of the step in the same, dying
    process. Without one, the interrupt fails the run as an unexpected termination, which run retries then
    launch again elsewhere, and a termination from the UI cancels it.

    A failure the step gives up on is final: the run is tagged so that run retries (which deploy/dagster.yaml
    applies to step failures, for the framework's own errors such as a database restart while an event is
    stored) do not repeat it.
    """
    final = (isinstance(exc, dg.Failure) and not exc.allow_retries) or (
        context.retry_number + 1 > policy.max_retries
    )
    if final:
        context.instance.add_run_tags(context.run.run_id, {RUN_RETRY_ON_STEP_FAILURE: "false"})
        raise exc
    raise dg.RetryRequested(
        max_retries=policy.max_retries, seconds_to_wait=policy.calculate_delay(context.retry_number + 1)
    ) from exc


def import_user_days(
    context: dg.AssetExecutionContext,
    google: GoogleResource,
    import_options: ImportOptionsResource,
    users_table: UsersTableResource,
    token_vault: TokenVaultResource,
    archive: ArchiveResource,
    fhir_server: FhirServerResource,
    event_hub: EventHubResource,
) -> Iterator[Any]:
    """The step body: each user-day of the run's keys through the selected steps (see the module docstring)."""
    if not (context.has_partition_key or context.has_partition_key_range):
        raise dg.Failure(description=CHECKS_NEED_KEYS, allow_retries=False)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    steps = [step for step in STEPS if step in selected]
    stores = open_step_stores(google, import_options, users_table, token_vault, archive)
    publisher = event_hub.publisher() if DEVICE_MESSAGES in selected else None
    fhir: Any = None
    templates: Any = None
    digest = None
    if FHIR_OBSERVATIONS in selected:  # compiled once per run
        fhir, templates = fhir_server.client(), templates_for_conversion(stores)
        digest = stored_templates_digest(stores)

    keys = {split_user_day(key): key for key in context.partition_keys}
    done: dict[str, dict[str, Any]] = {step: {} for step in steps}
    failed: dict[str, UserDayError] = {}
    refused: dict[str, str] = {}
    clock = UserClock()
    # Each user-day is materialized as soon as it is done, so the backfill page moves during the run.
    # If the run is terminated, leaving this loop stops the workers after their current user-day.
    try:
        # The run id owns the users' import leases: another run of the same users waits for this one.
        for outcome in iter_user_days(
            stores,
            keys,
            steps,
            fhir=fhir,
            templates=templates,
            templates_digest=digest,
            publisher=publisher,
            owner=context.run.run_id,
        ):
            key = keys[(outcome.day, outcome.user_key)]
            for step, summary in outcome.summaries.items():
                done[step][key] = summary
                yield dg.AssetMaterialization(
                    step, partition=key, metadata=step_metadata(step, summary, digest)
                )
            seconds = clock.lap(outcome.user_key)
            if outcome.error is None:
                context.log.info(progress_line(key, outcome.summaries, seconds))
            elif isinstance(outcome.error, UserNotImportable):
                # Expected: the user revoked or must onboard again. One line, and the earlier
                # materializations of these days stay as they are (the step does not fail for it).
                context.log.warning(f"not imported: {outcome.error}")
                refused[key] = str(outcome.error)
                for step in steps:
                    yield dg.AssetObservation(
                        step, partition=key, metadata={"not_imported": str(outcome.error)}
                    )
            else:
                failed[key] = outcome.error
                if outcome.cause is not None:
                    trace = "".join(traceback.format_exception(outcome.cause))
                    context.log.error(f"{key} failed unexpectedly:\n{trace}")
                context.log.error(str(outcome.error))
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        # SIGTERM/SIGINT: the workers stopped after their user-day in hand and those were materialized.
        finished = {key for summaries in done.values() for key in summaries} | set(failed) | set(refused)
        context.log.warning(
            f"interrupted after {len(finished)} of {len(keys)} user-days; the run fails as interrupted and"
            " its retry imports the others"
        )
        raise

    # Check results for the keys that succeeded, recorded even when other keys failed.
    checks = {check.name for check in context.selected_asset_check_keys}
    results: list[dg.AssetCheckResult] = []
    if FIT_DATASETS in selected:
        results += datasets_checks(done[FIT_DATASETS])
    if DEVICE_MESSAGES in selected:
        results += messages_checks(done[DEVICE_MESSAGES])
    if FHIR_OBSERVATIONS in selected:
        results += observations_checks(done[FHIR_OBSERVATIONS], fhir)
    # The keys that could not be checked, and why (their step failed or the user was refused).
    not_checked = {key: str(err) for key, err in failed.items()} | refused
    for result in results:
        if result.check_name in checks:
            extra = {"not_checked": dg.MetadataValue.json(not_checked)} if not_checked else {}
            yield result._replace(metadata={**result.metadata, **extra})
    if failed:
        total = len({key for summaries in done.values() for key in summaries} | set(failed))
        raise dg.Failure(
            description=f"{len(failed)} of {total} user-days failed:\n"
            + "\n".join(str(e) for e in failed.values()),
            metadata={"failed_partitions": dg.MetadataValue.json(sorted(failed))},
            allow_retries=any(err.retryable for err in failed.values()),
        )


def build_user_day_steps(settings: Settings) -> dg.AssetsDefinition:
    """The multi-asset over ``user_day_partitions(FITONFHIR_START_DATE)``; partitions, retries, kinds and
    definition metadata are the deployment's, fixed when the code location loads."""
    metadata = {**definition_metadata(settings), **code_reference(build_user_day_steps)}
    policy = import_retry_policy(settings.retry_delay_seconds)
    archive_kind = (
        {"azureblob"} if settings.azure_blob_endpoint or settings.azure_storage_connection_string else set()
    )

    @dg.multi_asset(
        name="user_day_steps",
        specs=[
            dg.AssetSpec(
                FIT_DATASETS,
                skippable=True,  # materialized per user-day as each finishes (AssetMaterialization)
                description="Every selected Google Fit stream of the user for the UTC day, archived as fetched.",
                kinds={"googlefit", "json"} | archive_kind,
                metadata=metadata,
                owners=OWNERS,
                tags=TAGS,
                group_name=GROUP,
            ),
            dg.AssetSpec(
                DEVICE_MESSAGES,
                skippable=True,
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
                skippable=True,
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
        backfill_policy=BACKFILL_POLICY,
    )
    def user_day_steps(
        context: dg.AssetExecutionContext,
        google: GoogleResource,
        import_options: ImportOptionsResource,
        users_table: UsersTableResource,
        token_vault: TokenVaultResource,
        archive: ArchiveResource,
        fhir_server: FhirServerResource,
        event_hub: EventHubResource,
    ) -> Iterator[Any]:
        try:
            yield from import_user_days(
                context, google, import_options, users_table, token_vault, archive, fhir_server, event_hub
            )
        except Exception as exc:
            retry_or_raise(context, policy, exc)

    return user_day_steps


def step_metadata(step: str, summary: Any, templates_hash: str | None) -> dict[str, dg.MetadataValue]:
    if step == FIT_DATASETS:
        return datasets_metadata(summary)
    if step == DEVICE_MESSAGES:
        return messages_metadata(summary)
    return observations_metadata(summary) | {"template_hash": dg.MetadataValue.text(templates_hash or "")}


class UserClock:
    """Seconds since the previous user-day of the same user finished (users run side by side)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last: dict[str, float] = {}

    def lap(self, user_key: str) -> float:
        now = time.monotonic()
        seconds = now - self.last.get(user_key, self.started)
        self.last[user_key] = now
        return seconds


def progress_line(key: str, summaries: dict[str, Any], seconds: float) -> str:
    """One INFO line per finished user-day: what a data engineer watches during a long run."""
    parts = [key]
    if FIT_DATASETS in summaries:
        parts.append(f"{summaries[FIT_DATASETS].points} points")
    if DEVICE_MESSAGES in summaries:
        parts.append(f"{summaries[DEVICE_MESSAGES].messages} messages")
    if FHIR_OBSERVATIONS in summaries:
        obs = summaries[FHIR_OBSERVATIONS]
        parts.append(f"{obs.created + obs.updated} Observations written ({obs.observations} in all)")
    return ", ".join(parts) + f", {seconds:.1f} s"


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
