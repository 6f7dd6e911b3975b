"""The MedTech-compatible converter: device messages in, FHIR R4 Observations and dead letters out.

Normalise every message with the device mapping, group the measurements like MedTech's FHIR stage,
resolve Patient/Device ids, build Observations with deterministic ids and merge same-id results.
Every failure (message, match or group) becomes a ``DeadLetter`` with MedTech's error name; it never
stops the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fitonfhir_dagster.gc_pause import paused_gc
from fitonfhir_dagster.medtech.device_templates import DeviceMapping, load_device_mapping
from fitonfhir_dagster.medtech.fhir_templates import CodeValueTemplate, FhirMapping, load_fhir_mapping
from fitonfhir_dagster.medtech.identity import IdentityResolver, ResolvedIdentity
from fitonfhir_dagster.medtech.measurements import (
    MatchFailure,
    Measurement,
    MeasurementExtractor,
    wrap_message,
)
from fitonfhir_dagster.medtech.medtech_errors import (
    ConversionError,
    InvalidDataFormatException,
    TemplateNotFoundException,
)
from fitonfhir_dagster.medtech.observations import (
    ObservationGroup,
    Series,
    build_observation,
    build_observation_groups,
    merge_series,
    raw_series_for,
)
from fitonfhir_dagster.medtech.observations import merge_observation as merge_resources
from fitonfhir_dagster.medtech.timestamps import now_ticks

__all__ = ["ConversionResult", "Converter", "DeadLetter", "DeviceEvent", "merge_observation"]


@dataclass(frozen=True)
class DeadLetter:
    """What could not be converted and why; ``reason`` is MedTech's exception name."""

    reason: str
    error: str
    message_index: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "error": self.error,
            "message_index": self.message_index,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class DeviceEvent:
    """A device message with the Event Hub properties MedTech exposes as ``Properties``/``SystemProperties``."""

    body: Any
    properties: Mapping[str, Any] = field(default_factory=dict)
    system_properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ConversionResult:
    observations: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    messages: int = 0
    measurements: int = 0
    points_matched: int = 0
    patients: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    # Timed values behind SampledData members, by Observation id (for exact merges).
    raw_series: dict[str, dict[str, Series]] = field(default_factory=dict)
    # Per-item accounting (``Converter(points_key=...)``): every counted item (a Fit point) ends in an
    # Observation, a dead letter or ``unmatched`` (MedTech drops those silently, with only a metric).
    points_in: int = 0
    points_observed: int = 0  # part of at least one Observation
    points_dead_lettered: int = 0  # matched, but every measurement of it failed (see dead_letters)
    unmatched: list[DeadLetter] = field(default_factory=list)  # matched by no device template

    @property
    def points_unaccounted(self) -> int:
        """Items in neither an Observation, a dead letter nor ``unmatched``: must be 0."""
        return self.points_in - self.points_observed - self.points_dead_lettered - len(self.unmatched)

    def merge_observation(
        self, existing: Mapping[str, Any], new: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """``merge_observation`` using this result's exact SampledData values for ``new``."""
        return merge_resources(existing, new, self.raw_series.get(str(new.get("id"))))


def merge_observation(existing: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Merge ``new`` into the stored ``existing`` (MedTech rules); returns (resource, changed)."""
    return merge_resources(existing, new)


GroupKey = tuple[str, str, str | None, str | None, str | None]


class Converter:
    """Converts device messages with one device mapping and one FHIR mapping."""

    def __init__(
        self,
        device_mapping: Any,
        fhir_mapping: Any,
        identity: IdentityResolver,
        *,
        clock: Callable[[], int] = now_ticks,
        points_key: str | None = None,
    ):
        """Mappings may be parsed dicts, JSON text or loaded mappings; ``clock`` gives ``issued`` ticks.

        ``points_key`` names the array of each message body whose items must each be accounted for
        (Google's ``point``): see ``ConversionResult.points_in`` and ``unmatched``.
        """
        self.device_mapping = (
            device_mapping
            if isinstance(device_mapping, DeviceMapping)
            else load_device_mapping(device_mapping)
        )
        self.fhir_mapping = (
            fhir_mapping if isinstance(fhir_mapping, FhirMapping) else load_fhir_mapping(fhir_mapping)
        )
        self.identity = identity
        self.clock = clock
        self.points_key = points_key
        self._extractor = MeasurementExtractor(self.device_mapping)

    def convert(self, messages: Iterable[Any], *, first_index: int = 0) -> ConversionResult:
        """Messages are dicts (the device message body), JSON bytes/str, or ``DeviceEvent``s.

        ``first_index`` numbers the messages in dead letters (a batch that continues an earlier one).

        The cyclic garbage collector is paused meanwhile: conversion allocates many small acyclic
        dicts (freed by reference counting) and collection passes would cost ~40% of the time.
        """
        with paused_gc():
            return self._convert(messages, first_index)

    def _convert(self, messages: Iterable[Any], first_index: int = 0) -> ConversionResult:
        result = ConversionResult()
        groups: dict[GroupKey, list[Measurement]] = {}
        track = self.points_key is not None
        observed: set[int] | None = set() if track else None
        dead: set[int] = set()
        for index, message in enumerate(messages, start=first_index):
            result.messages += 1
            wrapped = self._wrap(message, index, result)
            if wrapped is None:
                continue
            tokens: list[Any] | None = [] if track else None
            found, failures = self._extractor.extract(wrapped, index, tokens)
            if tokens is not None:
                self._account_items(wrapped["Body"], index, found, tokens, failures, dead, result)
            result.points_matched += len(found) + sum(1 for f in failures if f.match_index is not None)
            result.measurements += len(found)
            for failure in failures:
                error = failure.error
                result.dead_letters.append(DeadLetter(error.reason, str(error), index, error.detail))
            for m in found:
                key = (m.device_id, m.type, m.patient_id, m.encounter_id, m.correlation_id)
                bucket = groups.get(key)
                if bucket is None:
                    groups[key] = [m]
                else:
                    bucket.append(m)
        issued = self.clock()
        by_id: dict[str, dict[str, Any]] = {}
        patients: dict[str, dict[str, Any]] = {}
        devices: dict[str, dict[str, Any]] = {}
        for key, measurements in groups.items():
            identity = self._convert_group(key, measurements, issued, by_id, result, observed, dead)
            if identity is not None and identity.patient is not None:
                patients.setdefault(identity.patient_id, identity.patient)
            if identity is not None and identity.device is not None:
                devices.setdefault(identity.device_id, identity.device)
        if observed is not None:
            observed.discard(-1)
            dead.discard(-1)
            result.points_observed = len(observed)
            result.points_dead_lettered = len(dead - observed)
        result.observations = list(by_id.values())
        result.patients = list(patients.values())
        result.devices = list(devices.values())
        return result

    def _account_items(
        self,
        body: Any,
        index: int,
        found: list[Measurement],
        tokens: list[Any],
        failures: list[MatchFailure],
        dead: set[int],
        result: ConversionResult,
    ) -> None:
        """Number this message's items, tag each measurement with its item, record unmatched items."""
        key = self.points_key
        items = body.get(key) if type(body) is dict and key is not None else None
        if type(items) is not list or not items:
            return
        base = result.points_in
        result.points_in += len(items)
        position = {id(item): base + i for i, item in enumerate(items)}
        matched: set[int] = set()
        for m, token in zip(found, tokens, strict=True):
            m.origin = position.get(id(token), -1)
            matched.add(m.origin)
        for failure in failures:
            origin = position.get(id(failure.token), -1) if failure.token is not None else -1
            dead.add(origin)
            matched.add(origin)
        # A template whose type match itself failed is a dead letter for the whole message.
        message_failed = any(f.match_index is None for f in failures)
        source = body.get("dataSourceId")
        for i, item in enumerate(items):
            if base + i in matched:
                continue
            if message_failed:
                dead.add(base + i)
                continue
            type_name = item.get("dataTypeName") if type(item) is dict else None
            error = TemplateNotFoundException(
                f"no template matched {key}[{i}] (dataTypeName {type_name!r}) of message {index}"
                + (f" (dataSourceId {source!r})" if source is not None else "")
            )
            result.unmatched.append(DeadLetter(error.reason, str(error), index, f"{key}[{i}]"))

    @staticmethod
    def _wrap(message: Any, index: int, result: ConversionResult) -> dict[str, Any] | None:
        if isinstance(message, DeviceEvent):
            return wrap_message(message.body, message.properties, message.system_properties)
        if isinstance(message, bytes | bytearray | memoryview | str):
            try:
                message = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                error = InvalidDataFormatException(f"message is not valid JSON: {exc}")
                result.dead_letters.append(DeadLetter(error.reason, str(error), index, "message body"))
                return None
        return {"Body": message, "Properties": {}, "SystemProperties": {}}

    def _convert_group(
        self,
        key: GroupKey,
        measurements: list[Measurement],
        issued: int,
        by_id: dict[str, dict[str, Any]],
        result: ConversionResult,
        observed: set[int] | None = None,
        dead: set[int] | None = None,
    ) -> ResolvedIdentity | None:
        """``observed``/``dead`` (when accounting) collect the ``Measurement.origin`` of each outcome."""
        device, type_name, patient, encounter, _ = key
        first = min(m.message_index for m in measurements)
        where = f"type {type_name!r}, {len(measurements)} measurement(s)"
        try:
            template = self.fhir_mapping.find(type_name)
            if template is None:
                raise TemplateNotFoundException(f"no FHIR template has typeName {type_name!r}")
            identity = self.identity.resolve(device, patient, encounter)
            observation_groups = build_observation_groups(template, measurements)
        except ConversionError as exc:
            result.dead_letters.append(DeadLetter(exc.reason, str(exc), first, exc.detail or where))
            if dead is not None:
                dead.update(m.origin for m in measurements)
            return None
        for group in observation_groups:
            ok = self._add_group(template, group, identity, issued, by_id, result, where)
            if observed is not None and dead is not None:
                (observed if ok else dead).update(group.origins)
        return identity

    @staticmethod
    def _add_group(
        template: CodeValueTemplate,
        group: ObservationGroup,
        identity: ResolvedIdentity,
        issued: int,
        by_id: dict[str, dict[str, Any]],
        result: ConversionResult,
        where: str,
    ) -> bool:
        """Build (or merge in) the group's Observation; False when it became a dead letter."""
        try:
            observation = build_observation(template, group, identity, issued)
            raw = raw_series_for(template, group)
            existing = by_id.get(observation["id"])
            if existing is not None:
                # Same identifier twice in one batch (e.g. two readings in one second): MedTech merges.
                observation, _ = merge_resources(existing, observation, raw)
                earlier = result.raw_series.get(observation["id"])
                if raw is not None and earlier:
                    # Keep every timed value behind the merged data for a later merge with the stored copy.
                    raw = {**earlier, **{n: merge_series(earlier.get(n, []), v) for n, v in raw.items()}}
            by_id[observation["id"]] = observation
            if raw is not None:
                result.raw_series[observation["id"]] = raw
            return True
        except ConversionError as exc:
            span = f"{where}, {group.segment()}"
            result.dead_letters.append(
                DeadLetter(exc.reason, str(exc), min(group.message_indexes), exc.detail or span)
            )
            return False
