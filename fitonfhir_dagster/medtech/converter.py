"""The MedTech-compatible converter: device messages in, FHIR R4 Observations and dead letters out.

Normalise every message with the device mapping, group the measurements like MedTech's FHIR stage,
resolve Patient/Device ids, build Observations with deterministic ids and merge same-id results.
Every failure (message, match or group) becomes a ``DeadLetter`` with MedTech's error name; it never
stops the rest of the batch.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fitonfhir_dagster.medtech.device_templates import DeviceMapping, load_device_mapping
from fitonfhir_dagster.medtech.errors import (
    ConversionError,
    InvalidDataFormatException,
    TemplateNotFoundException,
)
from fitonfhir_dagster.medtech.fhir_templates import CodeValueTemplate, FhirMapping, load_fhir_mapping
from fitonfhir_dagster.medtech.identity import IdentityResolver, ResolvedIdentity
from fitonfhir_dagster.medtech.measurements import Measurement, MeasurementExtractor, wrap_message
from fitonfhir_dagster.medtech.observations import (
    InstantObservations,
    ObservationGroup,
    Series,
    build_observation,
    build_observation_groups,
    instant_measurements,
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
        fast_paths: bool = True,
    ):
        """Mappings may be parsed dicts, JSON text or loaded mappings; ``clock`` gives ``issued`` ticks.

        ``fast_paths=False`` runs every template through the general evaluator and group builder
        (same results, slower): the reference the specialised paths are tested against.
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
        self.fast_paths = fast_paths
        self._extractor = MeasurementExtractor(self.device_mapping, fast_paths=fast_paths)

    def convert(self, messages: Iterable[Any]) -> ConversionResult:
        """Messages are dicts (the device message body), JSON bytes/str, or ``DeviceEvent``s.

        The cyclic garbage collector is paused meanwhile: conversion allocates many small acyclic
        dicts (freed by reference counting) and collection passes would cost ~40% of the time.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._convert(messages)
        finally:
            if paused:
                gc.enable()

    def _convert(self, messages: Iterable[Any]) -> ConversionResult:
        result = ConversionResult()
        groups: dict[GroupKey, list[Measurement]] = {}
        for index, message in enumerate(messages):
            result.messages += 1
            wrapped = self._wrap(message, index, result)
            if wrapped is None:
                continue
            found, failures = self._extractor.extract(wrapped, index)
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
            identity = self._convert_group(key, measurements, issued, by_id, result)
            if identity is not None and identity.patient is not None:
                patients.setdefault(identity.patient_id, identity.patient)
            if identity is not None and identity.device is not None:
                devices.setdefault(identity.device_id, identity.device)
        result.observations = list(by_id.values())
        result.patients = list(patients.values())
        result.devices = list(devices.values())
        return result

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
    ) -> ResolvedIdentity | None:
        device, type_name, patient, encounter, _ = key
        first = min(m.message_index for m in measurements)
        where = f"type {type_name!r}, {len(measurements)} measurement(s)"
        try:
            template = self.fhir_mapping.find(type_name)
            if template is None:
                raise TemplateNotFoundException(f"no FHIR template has typeName {type_name!r}")
            identity = self.identity.resolve(device, patient, encounter)
            if self.fast_paths and not template.uses_sampled_data:
                instants = instant_measurements(measurements)
            else:
                observation_groups = build_observation_groups(template, measurements)
        except ConversionError as exc:
            result.dead_letters.append(DeadLetter(exc.reason, str(exc), first, exc.detail or where))
            return None
        if self.fast_paths and not template.uses_sampled_data:
            builder = InstantObservations(template, type_name, identity, issued)
            for m in instants:
                try:
                    observation = builder.build(m)
                except ConversionError:
                    # The general path reports it, with its wording and detail.
                    for group in build_observation_groups(template, [m]):
                        self._add_group(template, group, identity, issued, by_id, result, where)
                    continue
                existing = by_id.get(observation["id"])
                if existing is not None:
                    observation, _ = merge_resources(existing, observation, None)
                by_id[observation["id"]] = observation
            return identity
        for group in observation_groups:
            self._add_group(template, group, identity, issued, by_id, result, where)
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
    ) -> None:
        try:
            observation = build_observation(template, group, identity, issued)
            raw = raw_series_for(template, group)
            existing = by_id.get(observation["id"])
            if existing is not None:
                # Same identifier twice in one batch (e.g. two readings in one second): MedTech merges.
                observation, _ = merge_resources(existing, observation, raw)
            by_id[observation["id"]] = observation
            if raw is not None:
                result.raw_series[observation["id"]] = raw
        except ConversionError as exc:
            span = f"{where}, {group.segment()}"
            result.dead_letters.append(
                DeadLetter(exc.reason, str(exc), min(group.message_indexes), exc.detail or span)
            )
