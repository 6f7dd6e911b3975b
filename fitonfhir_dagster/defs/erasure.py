"""The ``erase_user`` job and the Dagster half of an erasure, shared with ``fitonfhir users erase``.

The data side is ``pipeline/erasure.py``; this module adds what needs the instance: refusing while a run of
the user is queued or running (tags ``dagster/partition/user``, ``fitonfhir/user``, ``dagster/partition``,
or a partition range whose user span covers the key), and removing the user's dynamic partition.
"""

# No `from __future__ import annotations`: Dagster inspects the op annotations at runtime.

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from ..fhir.fhir_client import FhirClient
from ..pipeline.erasure import ErasureError, ErasureSummary, erase_user_data, write_audit
from ..pipeline.step_stores import StepStores
from ..stores.keys import check_user_key
from .partitions import USERS
from .resources import (
    ArchiveResource,
    FhirServerResource,
    GoogleResource,
    ImportOptionsResource,
    TokenVaultResource,
    UsersTableResource,
    open_step_stores,
)
from .run_requests import RANGE_END, RANGE_START

ERASE_JOB = "erase_user"


def _user_of(tag_value: str | None) -> str | None:
    return tag_value.rsplit("|", 1)[-1] if tag_value else None


def covers_user(tags: dict[str, str], user_key: str, order: list[str]) -> bool:
    """Does a run with these tags touch ``user_key``? Conservative for ranges: lexical or partition order."""
    if user_key in (tags.get("dagster/partition/user"), tags.get("fitonfhir/user")):
        return True
    if _user_of(tags.get("dagster/partition")) == user_key:
        return True
    first, last = _user_of(tags.get(RANGE_START)), _user_of(tags.get(RANGE_END))
    if first is None or last is None:
        return False
    if min(first, last) <= user_key <= max(first, last):
        return True
    if first in order and last in order and user_key in order:
        lo, hi = sorted((order.index(first), order.index(last)))
        return lo <= order.index(user_key) <= hi
    return False


def runs_in_flight_for(instance: dg.DagsterInstance, user_key: str, exclude: str | None = None) -> list[str]:
    """Ids of queued/starting/started/canceling runs (and requested backfills) that touch ``user_key``."""
    order = list(instance.get_dynamic_partitions(USERS))
    found = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=NOT_FINISHED_STATUSES)):
        run = record.dagster_run
        if run.run_id != exclude and covers_user(dict(run.tags), user_key, order):
            found.append(run.run_id)
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._serdes import serialize_value

    for backfill in instance.get_backfills(filters=None, status=BulkActionStatus.REQUESTED):
        if f"|{user_key}" in serialize_value(backfill):  # its partitions still to launch name the user
            found.append(f"backfill {backfill.backfill_id}")
    return found


def refuse_if_in_flight(instance: dg.DagsterInstance, user_key: str, exclude: str | None = None) -> None:
    busy = runs_in_flight_for(instance, user_key, exclude)
    if busy:
        raise ErasureError(
            f"refusing to erase {user_key}: {len(busy)} run(s) of this user are queued or running "
            f"({', '.join(busy[:5])}); wait for them to finish or cancel them, then run the erasure again"
        )


def erase(
    instance: dg.DagsterInstance,
    stores: StepStores,
    fhir: FhirClient,
    user_key: str,
    exclude: str | None = None,
) -> ErasureSummary:
    """Refuse while a run of the user is in flight, erase under the user's import lease (held as this run,
    re-checking once no new run can be requested), remove the user's partition, write the audit line."""
    check_user_key(user_key)
    refuse_if_in_flight(instance, user_key, exclude)
    summary = erase_user_data(
        stores, fhir, user_key, lambda: refuse_if_in_flight(instance, user_key, exclude), owner=exclude
    )
    removed = instance.has_dynamic_partition(USERS, user_key)
    if removed:
        instance.delete_dynamic_partition(USERS, user_key)
    summary = ErasureSummary(**{**summary.__dict__, "partition_removed": removed})
    write_audit(stores, summary)
    return summary


class EraseUserConfig(dg.Config):
    user_key: str


@dg.op(name="erase_user_data", description="Delete a user's Observations, archive objects and token.")
def erase_user_op(
    context: dg.OpExecutionContext,
    config: EraseUserConfig,
    google: GoogleResource,
    import_options: ImportOptionsResource,
    users_table: UsersTableResource,
    token_vault: TokenVaultResource,
    archive: ArchiveResource,
    fhir_server: FhirServerResource,
) -> None:
    try:
        check_user_key(config.user_key)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    stores = open_step_stores(google, import_options, users_table, token_vault, archive)
    try:
        summary = erase(
            context.instance, stores, fhir_server.client(), config.user_key, exclude=context.run_id
        )
    except ErasureError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    context.log.info(summary.audit_json().decode())


@dg.job(name=ERASE_JOB, executor_def=dg.in_process_executor, description="Erase one user (config: user_key).")
def erase_user_job() -> None:
    erase_user_op()


@dg.definitions
def erasure_defs() -> dg.Definitions:
    return dg.Definitions(jobs=[erase_user_job])
