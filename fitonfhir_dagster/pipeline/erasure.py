"""Erasure of one user (issue 12 part 6): everything this project wrote about them, then an audit line.

Deleted: the Observations it wrote to the FHIR server (identifier system MedTech's, subject the user's
Patient; Observations of that Patient from other sources are left alone), and in identity mode ``create``
the Devices and the Patient it created (MedTech Create-mode ids); every archive object under
``user=<key>`` (datasets, device messages, dead letters); the refresh token. The users row is kept with
state ``erased`` (so the automation never imports them again and the key is not reused), Google sub and
Patient id included, so a later re-onboarding of the same account is recognised. The Patient onboarding
ensured in identity mode ``patient`` belongs to the EHR and stays.

Order: take the user's import lease (``pipeline.leases``, the one every import holds while it works on a
user), so an import that no Dagster run tag reveals (a run started before the check, a script) has finished
its days and a new one waits; then mark ``erased`` (no new runs are requested, and an import that waited for
the lease finds the user not importable), then delete, then give the lease up. A lease that stays another's
for ``FITONFHIR_USER_LEASE_WAIT_SECONDS`` refuses the erasure before anything changed. Every step is
idempotent, so an interrupted erasure is finished by running it again. The caller (the CLI or the
``erase_user`` job) refuses first while a run of the user is in flight and removes the Dagster partition.
No Dagster here.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ..fhir.fhir_client import FhirClient
from ..medtech.identity import IOMT_SYSTEM, hashed_id
from ..stores.keys import check_user_key
from ..stores.users import User, UserState, utc_now_iso
from .leases import ImportLeases
from .step_stores import StepStores

log = logging.getLogger("fitonfhir.audit")
AUDIT_KIND = "audit"
PAGE = 200
MAX_ROUNDS = 10_000  # pages of deletions of one search; a server that never empties its result is an error


class ErasureError(RuntimeError):
    """The erasure cannot start (unknown user, a run in flight) or a deletion failed."""


@dataclass(frozen=True)
class ErasureSummary:
    """Counts only: this is the audit record, it carries no PHI (no Google sub, no Patient id)."""

    user_key: str
    erased_at: str
    observations: int
    devices: int
    patients: int
    archive_objects: int
    dead_letter_objects: int
    token_deleted: bool
    partition_removed: bool = False

    def audit_json(self) -> bytes:
        return orjson.dumps({"event": "user_erased", **asdict(self)}, option=orjson.OPT_SORT_KEYS)


def _owned(resource: dict[str, Any], system: str | None) -> bool:
    if system is None:
        return True
    return any(i.get("system") == system for i in resource.get("identifier", []))


def delete_matches(fhir: FhirClient, resource_type: str, params: dict[str, str], system: str | None) -> int:
    """Delete every ``resource_type`` matching ``params`` (and having an identifier of ``system``).

    Searches the first page again after each round of deletions, so paging offsets never skip anything.
    """
    deleted = 0
    skipped: set[str] = set()
    for _ in range(MAX_ROUNDS):
        bundle = fhir.search_bundle(resource_type, {**params, "_count": str(PAGE)})
        found = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
        mine = [r for r in found if _owned(r, system) and str(r["id"]) not in skipped]
        skipped |= {str(r["id"]) for r in found if not _owned(r, system)}
        if not mine:
            if len(found) < PAGE or not found:
                return deleted
            # a full page of resources that are not ours: page past them
            params = {**params, "_offset": str(len(skipped))}
            continue
        results = fhir.batch(
            [{"request": {"method": "DELETE", "url": f"{resource_type}/{r['id']}"}} for r in mine]
        )
        failed = [r for r in results if not (r.ok or r.status in (404, 410))]
        if failed:
            raise ErasureError(
                f"the FHIR server refused {len(failed)} {resource_type} deletions (HTTP {failed[0].status})"
            )
        deleted += len(mine)
    raise ErasureError(f"{resource_type} search never emptied after {MAX_ROUNDS} rounds of deletions")


def user_archive_objects(stores: StepStores, user_key: str) -> list[str]:
    """Every archive object of the user: names ``kind/date=.../user=<key>/...``."""
    segment = f"user={check_user_key(user_key)}"
    return [name for name in stores.archive.list() if segment in name.split("/")[:-1]]


def mark_erased(stores: StepStores, user_key: str) -> User:
    user = stores.users.get(check_user_key(user_key))
    if user is None:
        raise ErasureError(f"no user with key {user_key!r}")
    if user.state != UserState.ERASED:
        user = stores.users.set_state(user_key, UserState.ERASED, "erased on request")
    return user


def erase_user_data(
    stores: StepStores,
    fhir: FhirClient,
    user_key: str,
    before_delete: Callable[[], None] | None = None,
    owner: str | None = None,
) -> ErasureSummary:
    """Under the user's import lease (held as ``owner``): mark the user erased, call ``before_delete`` (the
    caller's last in-flight check), delete. The caller writes the audit line."""
    if stores.users.get(check_user_key(user_key)) is None:
        raise ErasureError(f"no user with key {user_key!r}")
    leases = ImportLeases(
        stores.users,
        owner or f"erasure-{uuid.uuid4()}",
        ttl_seconds=stores.settings.user_lease_ttl_seconds,
        wait_seconds=stores.settings.user_lease_wait_seconds,
    )
    holder = leases.acquire(user_key, threading.Event())
    if holder is not None:
        raise ErasureError(
            f"refusing to erase {user_key}: run {holder} kept its import lease for"
            f" {leases.wait_seconds} s (FITONFHIR_USER_LEASE_WAIT_SECONDS); nothing was changed, run the"
            " erasure again once it has finished"
        )
    try:
        with leases.heartbeat():  # a user with years of Observations takes longer than one TTL
            return _erase_held(stores, fhir, user_key, before_delete)
    finally:
        leases.release(user_key)


def _erase_held(
    stores: StepStores, fhir: FhirClient, user_key: str, before_delete: Callable[[], None] | None
) -> ErasureSummary:
    user = mark_erased(stores, user_key)
    if before_delete is not None:
        before_delete()
    patients = [user.patient_id]
    create_mode = stores.settings.identity_mode == "create"
    created_patient = hashed_id(None, user.google_sub)
    if create_mode or created_patient != user.patient_id:
        patients.append(created_patient)  # Create mode now or earlier: its Patient's Observations too
    observations = 0
    for patient in dict.fromkeys(patients):
        observations += delete_matches(fhir, "Observation", {"subject": f"Patient/{patient}"}, IOMT_SYSTEM)
    devices = patients_deleted = 0
    if create_mode:
        devices = delete_matches(fhir, "Device", {"patient": f"Patient/{created_patient}"}, None)
        if fhir.read("Patient", created_patient) is not None:
            fhir.delete("Patient", created_patient)
            patients_deleted = 1
    names = user_archive_objects(stores, user_key)
    for name in names:
        stores.archive.delete(name)
    token = stores.vault.get(user_key) is not None
    stores.vault.delete(user_key)
    summary = ErasureSummary(
        user_key=user_key,
        erased_at=utc_now_iso(),
        observations=observations,
        devices=devices,
        patients=patients_deleted,
        archive_objects=len(names),
        dead_letter_objects=sum(1 for n in names if n.startswith("dead_letters/")),
        token_deleted=token,
    )
    return summary


def write_audit(stores: StepStores, summary: ErasureSummary) -> str:
    """One JSON line in the archive (``audit/erasures/<key>-<time>.json``, outside ``user=``) and the log."""
    stamp = summary.erased_at.replace(":", "").replace("-", "")
    name = f"{AUDIT_KIND}/erasures/{summary.user_key}-{stamp}.json"
    stores.archive.put(name, summary.audit_json() + b"\n")
    log.info(summary.audit_json().decode())
    return name
