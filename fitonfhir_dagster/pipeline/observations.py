"""Step 3: convert one user-day's device messages to Observations (MedTech rules) and write them to FHIR.

Re-running a user-day writes nothing: Observations have deterministic ids, the stored version is merged
with the new one by MedTech's rules, and only resources that changed are sent (with If-Match).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..fhir.bundles import chunks, identifier_query, put_entry
from ..fhir.fhir_client import WRITE_MODE_CONDITIONAL_CREATE, WRITE_MODE_PUT, FhirClient
from ..fhir.fhir_errors import FhirError, PreconditionFailed
from ..medtech.converter import Converter
from ..medtech.identity import CreateIdentity, IdentityResolver, PatientReferenceIdentity
from ..stores.archive import object_name
from .messages import load_messages
from .ports import Ports
from .step_errors import TransientUserDayError, UpstreamMissing, UserDayError

DEAD_LETTERS = "dead_letters"
MAX_MERGE_ATTEMPTS = 3


@dataclass
class ObservationsSummary:
    user_key: str
    day: str
    observations: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    devices_written: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # unmatched points included
    written_ids: list[str] = field(default_factory=list)
    # Reconciliation: every point of the device messages is in an Observation, a dead letter or an
    # archived "no template matched" record; ``points_unaccounted`` must be 0.
    points_in: int = 0
    points_observed: int = 0
    points_dead_lettered: int = 0
    points_unmatched: int = 0

    @property
    def points_unaccounted(self) -> int:
        return self.points_in - self.points_observed - self.points_dead_lettered - self.points_unmatched

    @property
    def written(self) -> int:
        return self.created + self.updated


def identity_for(ports: Ports, user_key: str) -> IdentityResolver:
    """``patient`` (default) references the user's onboarded Patient; ``create`` behaves like MedTech Create."""
    if ports.settings.identity_mode == "create":
        return CreateIdentity()
    user = ports.users.get(user_key)
    return PatientReferenceIdentity({user.google_sub: user.patient_id} if user else {})


def convert_user_day(
    ports: Ports, fhir: FhirClient, templates: tuple[Any, Any], day: str, user_key: str
) -> ObservationsSummary:
    """``templates``: (device mapping, FHIR mapping), as dicts or already loaded (compiled once per run)."""
    messages = load_messages(ports, day, user_key)
    if messages is None:
        raise UpstreamMissing(user_key, day, "no archived device_messages; materialize device_messages first")
    converter = Converter(templates[0], templates[1], identity_for(ports, user_key), points_key="point")
    result = converter.convert(messages)
    summary = ObservationsSummary(
        user_key,
        day,
        observations=len(result.observations),
        points_in=result.points_in,
        points_observed=result.points_observed,
        points_dead_lettered=result.points_dead_lettered,
        points_unmatched=len(result.unmatched),
    )
    letters = [d.to_dict() for d in (*result.dead_letters, *result.unmatched)]
    for letter in letters:
        summary.dead_letter_reasons[letter["reason"]] = (
            summary.dead_letter_reasons.get(letter["reason"], 0) + 1
        )
    summary.dead_letters = len(result.dead_letters)
    name = object_name(DEAD_LETTERS, day, user_key, "dead_letters.ndjson")
    ports.archive.put(name, b"".join(orjson.dumps(x) + b"\n" for x in letters))
    try:
        if result.patients:  # Create mode: the Patients MedTech would have created
            fhir.upsert_many(result.patients)
        if result.devices:
            summary.devices_written = fhir.upsert_many(result.devices).written
        _write_merged(fhir, result, summary)
    except PreconditionFailed as exc:
        raise TransientUserDayError(user_key, day, f"concurrent change on the FHIR server: {exc}") from exc
    except FhirError as exc:
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user_key, day, f"FHIR write failed: {exc}") from exc
    return summary


def _write_merged(fhir: FhirClient, result: Any, summary: ObservationsSummary) -> None:
    """Write what changed, one transaction Bundle per chunk (all-or-nothing), merging with stored versions."""
    if fhir.write_mode_for("Observation") != WRITE_MODE_PUT:
        _write_by_identifier(fhir, result, summary)
        return
    for index, chunk in enumerate(chunks(result.observations, fhir.bundle_size)):
        try:
            _write_chunk(fhir, result, chunk, summary)
        except FhirError as exc:
            if exc.status != 405 or index:
                raise
            # PUT with our id refused although the CapabilityStatement did not say so: fall back.
            fhir.write_mode = WRITE_MODE_CONDITIONAL_CREATE
            _write_by_identifier(fhir, result, summary)
            return


def _write_chunk(
    fhir: FhirClient, result: Any, chunk: Sequence[dict[str, Any]], summary: ObservationsSummary
) -> None:
    pending = {str(o["id"]): o for o in chunk}
    for _ in range(MAX_MERGE_ATTEMPTS):
        existing = fhir.read_many("Observation", list(pending))
        entries, is_new, unchanged = [], [], 0
        for obs_id, new in pending.items():
            current = existing.get(obs_id)
            if current is None:
                entries.append(put_entry(new))
                is_new.append(True)
                continue
            merged, changed = result.merge_observation(current, new)
            if not changed:
                unchanged += 1
                continue
            entries.append(put_entry(merged, if_match=(current.get("meta") or {}).get("versionId")))
            is_new.append(False)
        try:
            if entries:
                fhir.transaction(entries)
        except PreconditionFailed:
            continue  # someone wrote in between: re-read, re-merge, retry this chunk
        summary.unchanged += unchanged
        summary.created += sum(is_new)
        summary.updated += len(is_new) - sum(is_new)
        summary.written_ids.extend(e["resource"]["id"] for e in entries)
        return
    raise PreconditionFailed(412, "POST", "transaction", detail="Observations kept changing while merging")


def _write_by_identifier(fhir: FhirClient, result: Any, summary: ObservationsSummary) -> None:
    """For servers that refuse client-assigned ids: find each Observation by its MedTech identifier."""
    for new in result.observations:
        identifier = new["identifier"][0]
        system, value = identifier.get("system"), identifier["value"]
        matches = fhir.find_by_identifier("Observation", system, value)
        if not matches:
            stored, _ = fhir.conditional_create(new, identifier_query(system, value))
            summary.created += 1
            summary.written_ids.append(str(stored["id"]))
            continue
        current = matches[0]
        merged, changed = result.merge_observation(current, new)
        if not changed:
            summary.unchanged += 1
            continue
        merged["id"] = current["id"]
        fhir.update(merged, if_match=(current.get("meta") or {}).get("versionId"))
        summary.updated += 1
        summary.written_ids.append(str(current["id"]))
