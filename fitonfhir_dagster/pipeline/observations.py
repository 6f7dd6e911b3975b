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
import itertools
import random
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
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
    stores: StepStores, fhir: FhirClient, messages: bytes | Iterable[bytes], digest: str, user_key: str
) -> str:
    """What a user-day's FHIR write depends on: its device messages (bytes, or their lines as read from
    the archive), the templates, the server, identity."""
    user = stores.users.get(user_key)
    identity = stores.settings.identity_mode
    if identity != "create":
        identity += f":{user.google_sub}:{user.patient_id}" if user else ":-"
    h = hashlib.sha256()
    for part in (FINGERPRINT_VERSION, digest, fhir.base_url, identity):
        h.update(part.encode())
        h.update(b"\0")
    for chunk in (messages,) if isinstance(messages, bytes) else messages:
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def _message_chunks(lines: Iterable[bytes], points: int) -> Iterator[tuple[int, list[Any]]]:
    """The device messages (parsed) in chunks of about ``points`` points, each with its first index."""
    chunk: list[Any] = []
    count = first = index = 0
    for line in lines:
        if not line.strip():
            continue
        message: Any = orjson.loads(line)  # we wrote it: a line that is not JSON fails the step, as before
        chunk.append(message)
        index += 1
        body_points = message.get("point") if type(message) is dict else None
        count += len(body_points) if type(body_points) is list else 1
        if count >= points:
            yield first, chunk
            chunk, count, first = [], 0, index
    if chunk:
        yield first, chunk


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

    The messages are read from the archive a line at a time and converted and written
    ``CONVERT_CHUNK_POINTS`` points at a time, so a heavy day holds one chunk's Observations, not the
    day's. Chunks go one after the other: an Observation id met again in a later chunk (two readings
    of one period on two pages) is merged with the version the earlier chunk wrote, as MedTech merges
    a later event into the stored Observation, and is counted once.
    """
    name = messages_object(day, user_key)
    lines = stores.archive.get_lines(name)
    if lines is None:
        raise UpstreamMissing(user_key, day, "no archived device_messages; materialize device_messages first")
    digest = digest or templates_digest(templates)
    verify = stores.settings.fhir_verify if verify is None else verify
    fingerprint = write_fingerprint(stores, fhir, lines, digest, user_key) if digest else None
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
    if fingerprint is not None:
        lines = stores.archive.get_lines(name)  # read again: the first pass went into the fingerprint
        if lines is None:
            raise UpstreamMissing(user_key, day, "the archived device_messages disappeared while converting")
    converter = Converter(templates[0], templates[1], identity_for(stores, user_key), points_key="point")
    summary = ObservationsSummary(user_key, day)
    written = _DayWrites(devices_written or DevicesWritten())
    with (
        tempfile.SpooledTemporaryFile(max_size=1 << 20) as dead,
        tempfile.SpooledTemporaryFile(max_size=1 << 20) as unmatched,
    ):
        try:
            for first, messages in _message_chunks(lines, CONVERT_CHUNK_POINTS):
                result = converter.convert(messages, first_index=first)
                del messages  # keep only the chunk's Observations in memory while writing
                _count(summary, result, written, dead, unmatched)
                written.write(fhir, result, summary)
                del result
        except PreconditionFailed as exc:
            raise TransientUserDayError(
                user_key, day, f"concurrent change on the FHIR server: {exc}"
            ) from exc
        except FhirError as exc:
            cls = TransientUserDayError if exc.retryable else UserDayError
            raise cls(user_key, day, f"FHIR write failed: {exc}") from exc
        finally:  # the dead letters of what was converted, also when a write failed
            dead.seek(0)
            unmatched.seek(0)
            stores.archive.put_chunks(
                object_name(DEAD_LETTERS, day, user_key, "dead_letters.ndjson"),
                itertools.chain(
                    iter(lambda: dead.read(1 << 20), b""), iter(lambda: unmatched.read(1 << 20), b"")
                ),
            )
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


CONVERT_CHUNK_POINTS = 5_000  # points converted and written at a time (a heavy day: ~10 chunks)


def _count(summary: ObservationsSummary, result: Any, written: _DayWrites, dead: Any, unmatched: Any) -> None:
    """Add one chunk's conversion to the summary; its dead letters and unmatched points to the spools."""
    summary.observations += written.new_ids(result.observations)
    summary.points_in += result.points_in
    summary.points_observed += result.points_observed
    summary.points_dead_lettered += result.points_dead_lettered
    summary.points_unmatched += len(result.unmatched)
    summary.dead_letters += len(result.dead_letters)
    reasons = summary.dead_letter_reasons
    for letters, spool in ((result.dead_letters, dead), (result.unmatched, unmatched)):
        for letter in letters:
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
            spool.write(orjson.dumps(letter.to_dict()) + b"\n")


class _DayWrites:
    """What one user-day has written so far: Observation ids (to count each once), Patients, Devices."""

    def __init__(self, devices: DevicesWritten) -> None:
        self.ids: set[str] = set()
        self.patients: set[str] = set()
        self.devices = devices

    def new_ids(self, observations: Sequence[dict[str, Any]]) -> int:
        before = len(self.ids)
        self.ids.update(str(o["id"]) for o in observations)
        return len(self.ids) - before

    def write(self, fhir: FhirClient, result: Any, summary: ObservationsSummary) -> None:
        patients = [p for p in result.patients if str(p.get("id")) not in self.patients]
        if patients:  # Create mode: the Patients MedTech would have created
            fhir.upsert_many(patients)
            self.patients.update(str(p.get("id")) for p in patients)
        devices = self.devices.new(fhir, result.devices)
        if devices:
            summary.devices_written += fhir.upsert_many(devices).written
            self.devices.add(fhir, devices)
        _write_merged(fhir, result, summary)


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
