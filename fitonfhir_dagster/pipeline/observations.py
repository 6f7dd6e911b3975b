"""Step 3: convert one user-day's device messages to Observations (MedTech rules) and write them to FHIR.

Re-running a user-day writes nothing: Observations have deterministic ids, the stored version is merged
with the new one by MedTech's rules, and only resources that changed are sent (with If-Match). The stored
versions are read one batch per chunk, and several chunks are in flight at once. After a successful
write the user-day's fingerprint (device messages, templates, FHIR base URL, identity) is recorded in
the archive; a re-run with the same fingerprint costs no FHIR request at all, unless
``FITONFHIR_FHIR_VERIFY=true`` asks to verify against the server.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..fhir.bundles import chunks, identifier_query, put_entry
from ..fhir.fhir_client import WRITE_MODE_CONDITIONAL_CREATE, WRITE_MODE_PUT, FhirClient
from ..fhir.fhir_errors import FhirError, PreconditionFailed
from ..medtech.converter import Converter
from ..medtech.identity import CreateIdentity, IdentityResolver, PatientReferenceIdentity
from ..stores.archive import object_name
from . import conversion_templates
from .messages import messages_object
from .step_errors import TransientUserDayError, UpstreamMissing, UserDayError
from .step_stores import StepStores

KIND = "fhir_observations"
WRITTEN_OBJECT = "written.json"
DEAD_LETTERS = "dead_letters"
MAX_MERGE_ATTEMPTS = 3
WRITTEN_SAMPLE = 20  # written ids kept per user-day for the read-back check
CHUNKS_IN_FLIGHT = 4  # transaction Bundles of one user-day sent at once
FINGERPRINT_VERSION = "1"


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
    written_ids: list[str] = field(default_factory=list)  # a uniform sample, at most WRITTEN_SAMPLE ids
    skipped: bool = False  # same fingerprint as the last successful write: FHIR not contacted
    _seen: int = field(default=0, repr=False)  # written ids offered to the sample
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

    def note_written(self, ids: Iterable[str]) -> None:
        """Keep a uniform sample of the written ids (reservoir): a heavy day writes 50k Observations."""
        for rid in ids:
            self._seen += 1
            if len(self.written_ids) < WRITTEN_SAMPLE:
                self.written_ids.append(rid)
            else:
                slot = random.randrange(self._seen)
                if slot < WRITTEN_SAMPLE:
                    self.written_ids[slot] = rid


def identity_for(stores: StepStores, user_key: str) -> IdentityResolver:
    """``patient`` (default) references the user's onboarded Patient; ``create`` behaves like MedTech Create."""
    if stores.settings.identity_mode == "create":
        return CreateIdentity()
    user = stores.users.get(user_key)
    return PatientReferenceIdentity({user.google_sub: user.patient_id} if user else {})


class DevicesWritten:
    """The Devices one run has written (by server and content): the same Device is sent once per run."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _key(fhir: FhirClient, device: dict[str, Any]) -> tuple[str, bytes]:
        return fhir.base_url, hashlib.sha256(orjson.dumps(device, option=orjson.OPT_SORT_KEYS)).digest()

    def new(self, fhir: FhirClient, devices: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in devices if self._key(fhir, d) not in self._seen]

    def add(self, fhir: FhirClient, devices: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self._seen.update(self._key(fhir, d) for d in devices)


def written_object(day: str, user_key: str) -> str:
    return object_name(KIND, day, user_key, WRITTEN_OBJECT)


def templates_digest(templates: tuple[Any, Any]) -> str | None:
    """The templates' version when given as JSON dicts; None for compiled ones (no stable form)."""
    if isinstance(templates[0], dict) and isinstance(templates[1], dict):
        return conversion_templates.templates_digest(templates[0], templates[1])
    return None


def write_fingerprint(
    stores: StepStores, fhir: FhirClient, messages: bytes, digest: str, user_key: str
) -> str:
    """What a user-day's FHIR write depends on: its device messages, the templates, the server, identity."""
    user = stores.users.get(user_key)
    identity = stores.settings.identity_mode
    if identity != "create":
        identity += f":{user.google_sub}:{user.patient_id}" if user else ":-"
    h = hashlib.sha256()
    for part in (FINGERPRINT_VERSION, digest, fhir.base_url, identity):
        h.update(part.encode())
        h.update(b"\0")
    h.update(messages)
    return "sha256:" + h.hexdigest()


def convert_user_day(
    stores: StepStores,
    fhir: FhirClient,
    templates: tuple[Any, Any],
    day: str,
    user_key: str,
    *,
    digest: str | None = None,
    verify: bool | None = None,
    devices_written: DevicesWritten | None = None,
) -> ObservationsSummary:
    """``templates``: (device mapping, FHIR mapping), as dicts or already loaded (compiled once per run).

    ``digest`` identifies the templates (see :func:`templates_digest`; computed for dicts); without one
    the write is always verified against the server. ``verify`` (default ``FITONFHIR_FHIR_VERIFY``)
    re-reads FHIR even when the fingerprint of the last successful write matches. ``devices_written``
    (one per run) remembers the Devices already written, so the days of a user write them once.
    """
    raw = stores.archive.get(messages_object(day, user_key))
    if raw is None:
        raise UpstreamMissing(user_key, day, "no archived device_messages; materialize device_messages first")
    digest = digest or templates_digest(templates)
    verify = stores.settings.fhir_verify if verify is None else verify
    fingerprint = write_fingerprint(stores, fhir, raw, digest, user_key) if digest else None
    record_name = written_object(day, user_key)
    if fingerprint is not None and not verify:
        stored = stores.archive.get(record_name)
        record = orjson.loads(stored) if stored is not None else None
        if record is not None and record.get("fingerprint") == fingerprint:
            return ObservationsSummary(
                user_key,
                day,
                observations=int(record.get("observations", 0)),
                unchanged=int(record.get("observations", 0)),
                dead_letters=int(record.get("dead_letters", 0)),
                dead_letter_reasons=dict(record.get("dead_letter_reasons") or {}),
                points_in=int(record.get("points_in", 0)),
                points_observed=int(record.get("points_observed", 0)),
                points_dead_lettered=int(record.get("points_dead_lettered", 0)),
                points_unmatched=int(record.get("points_unmatched", 0)),
                skipped=True,
            )
        if record is not None:
            stores.archive.delete(record_name)  # what the server holds is about to change
    messages = [orjson.loads(line) for line in raw.splitlines() if line]
    converter = Converter(templates[0], templates[1], identity_for(stores, user_key), points_key="point")
    result = converter.convert(messages)
    del messages, raw  # a heavy day: keep only the Observations in memory while writing
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
    stores.archive.put(name, b"".join(orjson.dumps(x) + b"\n" for x in letters))
    try:
        if result.patients:  # Create mode: the Patients MedTech would have created
            fhir.upsert_many(result.patients)
        devices = devices_written.new(fhir, result.devices) if devices_written else result.devices
        if devices:
            summary.devices_written = fhir.upsert_many(devices).written
            if devices_written is not None:
                devices_written.add(fhir, devices)
        _write_merged(fhir, result, summary)
    except PreconditionFailed as exc:
        raise TransientUserDayError(user_key, day, f"concurrent change on the FHIR server: {exc}") from exc
    except FhirError as exc:
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user_key, day, f"FHIR write failed: {exc}") from exc
    if fingerprint is not None:
        record = {
            "fingerprint": fingerprint,
            "observations": summary.observations,
            "dead_letters": summary.dead_letters,
            "dead_letter_reasons": summary.dead_letter_reasons,
            "points_in": summary.points_in,
            "points_observed": summary.points_observed,
            "points_dead_lettered": summary.points_dead_lettered,
            "points_unmatched": summary.points_unmatched,
        }
        stores.archive.put(record_name, orjson.dumps(record))
    return summary


def _write_merged(fhir: FhirClient, result: Any, summary: ObservationsSummary) -> None:
    """Write what changed, one transaction Bundle per chunk (all-or-nothing), merging with stored versions.

    The first chunk goes alone (it finds out whether the server takes our ids); the others go
    ``CHUNKS_IN_FLIGHT`` at a time. Chunks hold disjoint ids, so their order does not matter.
    """
    if fhir.write_mode_for("Observation") != WRITE_MODE_PUT:
        _write_by_identifier(fhir, result, summary)
        return
    parts = list(chunks(result.observations, fhir.bundle_size))
    if not parts:
        return
    lock = threading.Lock()
    try:
        _write_chunk(fhir, result, parts[0], summary, lock)
    except FhirError as exc:
        if exc.status != 405:
            raise
        # PUT with our id refused although the CapabilityStatement did not say so: fall back.
        fhir.write_mode = WRITE_MODE_CONDITIONAL_CREATE
        _write_by_identifier(fhir, result, summary)
        return
    rest = parts[1:]
    if len(rest) <= 1:
        for chunk in rest:
            _write_chunk(fhir, result, chunk, summary, lock)
        return
    with ThreadPoolExecutor(min(CHUNKS_IN_FLIGHT, len(rest)), thread_name_prefix="fhir-chunk") as pool:
        for future in [pool.submit(_write_chunk, fhir, result, c, summary, lock) for c in rest]:
            future.result()  # the first failure raises (the others finish: re-running is idempotent)


def _write_chunk(
    fhir: FhirClient,
    result: Any,
    chunk: Sequence[dict[str, Any]],
    summary: ObservationsSummary,
    lock: threading.Lock,
) -> None:
    pending = {str(o["id"]): o for o in chunk}
    for _ in range(MAX_MERGE_ATTEMPTS):
        existing = fhir.read_batch("Observation", list(pending), chunk_size=len(pending))
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
                fhir.transaction(entries, minimal=True)
        except PreconditionFailed:
            continue  # someone wrote in between: re-read, re-merge, retry this chunk
        with lock:
            summary.unchanged += unchanged
            summary.created += sum(is_new)
            summary.updated += len(is_new) - sum(is_new)
            summary.note_written(e["resource"]["id"] for e in entries)
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
            summary.note_written([str(stored["id"])])
            continue
        current = matches[0]
        merged, changed = result.merge_observation(current, new)
        if not changed:
            summary.unchanged += 1
            continue
        merged["id"] = current["id"]
        fhir.update(merged, if_match=(current.get("meta") or {}).get("versionId"))
        summary.updated += 1
        summary.note_written([str(current["id"])])
