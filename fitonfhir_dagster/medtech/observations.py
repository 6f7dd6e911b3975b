"""Observation building, as MedTech's FHIR stage: groups, period buckets, values, identity and merge.

Resources are plain dicts (no model classes on the hot path). Deviations from MedTech, all on purpose:
period intervals apply only to templates with a SampledData value (the managed service's documented
behaviour; instance otherwise), and a merge keeps the stored ``effectivePeriod`` text when the
instants did not change (so a server that normalises instants does not cause endless amendments).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter
from typing import Any

from fitonfhir_dagster.medtech.fhir_templates import (
    CODEABLE_CONCEPT,
    CORRELATION,
    DAILY,
    HOURLY,
    QUANTITY,
    SAMPLED_DATA,
    STRING,
    CodeValueTemplate,
    FhirCode,
    FhirValue,
)
from fitonfhir_dagster.medtech.identity import IOMT_SYSTEM, ResolvedIdentity
from fitonfhir_dagster.medtech.measurements import Measurement
from fitonfhir_dagster.medtech.medtech_errors import (
    CorrelationIdNotDefinedException,
    InvalidQuantityFhirValueException,
    NotSupportedException,
)
from fitonfhir_dagster.medtech.timestamps import (
    TICKS_PER_DAY,
    TICKS_PER_HOUR,
    TICKS_PER_MS,
    TimestampError,
    format_identifier_segment,
    format_instant_texts,
    format_issued,
    format_period_instant,
    parse_timestamp,
)

Series = list[tuple[int, str]]
VALUE_KEYS = {
    SAMPLED_DATA: "valueSampledData",
    QUANTITY: "valueQuantity",
    STRING: "valueString",
    CODEABLE_CONCEPT: "valueCodeableConcept",
}
# .NET decimal.Parse with NumberStyles.Number: white space, a leading or trailing sign, a decimal
# point and thousands separators; no exponent.
_DECIMAL = re.compile(r"^\s*([+-]?)\s*((?:\d|,)*)(?:\.(\d*))?\s*([+-]?)\s*$")


@dataclass
class ObservationGroup:
    """The measurements that become one Observation: a time boundary and values per valueName."""

    type_name: str
    start: int
    end: int
    correlation_id: str | None = None
    values: dict[str, Series] = field(default_factory=dict)
    message_indexes: set[int] = field(default_factory=set)
    origins: list[int] = field(default_factory=list)  # Measurement.origin of every member

    def segment(self) -> str:
        if self.correlation_id is not None:
            return self.correlation_id
        return f"{format_identifier_segment(self.start)}.{format_identifier_segment(self.end)}"


_BY_TIME = attrgetter("occurrence_ticks")


def dedupe_by_time(measurements: Iterable[Measurement]) -> list[Measurement]:
    """One measurement per occurrence time: the latest message wins, the first seen within a message."""
    chosen: dict[int, Measurement] = {}
    for m in measurements:
        current = chosen.get(m.occurrence_ticks)
        if current is None or m.message_index > current.message_index:
            chosen[m.occurrence_ticks] = m
    return list(chosen.values())


def build_observation_groups(
    template: CodeValueTemplate, measurements: list[Measurement]
) -> list[ObservationGroup]:
    """Split one measurement group (same device, type, patient, encounter, correlation) by period.

    Groups come in the order their first measurement arrived, as MedTech's
    TimePeriodMeasurementObservationGroupFactory fills a Dictionary in message order: two groups with
    one identifier (same second) are then merged in message order, in one batch as across batches.
    """
    interval = template.period_interval if template.uses_sampled_data else 0
    groups: dict[Any, ObservationGroup] = {}
    keys: dict[int, Any] = {}  # occurrence ticks -> group key
    for m in measurements:  # arrival order; superseded measurements too: the points a group stands for
        t = m.occurrence_ticks
        key: Any = keys.get(t) if interval != CORRELATION else None
        if key is None:
            if interval == CORRELATION:
                if m.correlation_id is None:
                    raise CorrelationIdNotDefinedException(
                        f"measurement of {m.type!r} at {m.occurrence_time_utc} has no correlation id"
                    )
                key = m.correlation_id
            elif interval == HOURLY:
                key = t - t % TICKS_PER_HOUR
            elif interval == DAILY:
                key = t - t % TICKS_PER_DAY
            else:
                key = t
            keys[t] = key
        group = groups.get(key)
        if group is None:
            if interval == HOURLY:
                group = ObservationGroup(m.type, key, key + TICKS_PER_HOUR - 1)
            elif interval == DAILY:
                group = ObservationGroup(m.type, key, key + TICKS_PER_DAY - 1)
            else:
                group = ObservationGroup(m.type, t, t, m.correlation_id if interval == CORRELATION else None)
            groups[key] = group
        group.origins.append(m.origin)
    for m in sorted(dedupe_by_time(measurements), key=_BY_TIME):
        t = m.occurrence_ticks
        group = groups[m.correlation_id if interval == CORRELATION else keys[t]]
        if interval in (CORRELATION, 0):
            group.start = min(group.start, t)
            group.end = max(group.end, t)
        group.message_indexes.add(m.message_index)
        for name, value in m.properties:
            series = group.values.setdefault(name, [])
            if not series or series[-1][0] != t:
                series.append((t, value))
    return list(groups.values())


def identifier_value(identity: ResolvedIdentity, group: ObservationGroup) -> str:
    return f"{identity.patient_id}.{identity.device_id}.{group.type_name}.{group.segment()}"


def observation_id(value: str, system: str = IOMT_SYSTEM) -> str:
    """Lowercase hex SHA-256 of ``<system>_<value>`` (MedTech's deterministic Observation id)."""
    return hashlib.sha256(f"{system}_{value}".encode()).hexdigest()


def parse_decimal(text: str) -> int | float:
    """MedTech's ``decimal.Parse`` (invariant culture); raises ValueError like .NET does."""
    if text.isascii():
        if text.isdigit():
            return int(text)
        whole, dot, fraction = text.partition(".")
        if dot and whole.isdigit() and fraction.isdigit():
            return float(text) if fraction.strip("0") else int(whole)
    match = _DECIMAL.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a decimal number")
    lead, whole, fraction, trail = match.groups()
    if lead and trail:
        raise ValueError(f"{text!r} has two signs")
    whole = whole.replace(",", "")
    if not whole and not fraction:
        raise ValueError(f"{text!r} has no digits")
    negative = "-" in (lead, trail)
    if fraction and fraction.strip("0"):
        number: int | float = float(f"{whole or '0'}.{fraction}")
    else:
        number = int(whole or "0")
    return -number if negative else number


# Readings repeat (a heart rate of 72 many times a day): parse each text once. Errors are not cached.
_cached_decimal = lru_cache(maxsize=4096)(parse_decimal)


def _coding(codes: tuple[FhirCode, ...], name: str) -> dict[str, Any]:
    coding = [c.coding() for c in codes]
    coding.append({"system": IOMT_SYSTEM, "code": name, "display": name})
    return {"coding": coding, "text": name}


def sampled_data(series: Series, start: int, end: int, period_ms: float) -> str:
    """MedTech's SampledData string: one slot per period from start while slot <= end, last value wins."""
    step = int(round(period_ms * TICKS_PER_MS))
    tokens: list[str] = []
    i = 0
    current = start
    while current <= end:
        upper = current + step
        value = None
        while i < len(series) and current <= series[i][0] < upper:
            value = series[i][1]
            i += 1
        tokens.append(value if value is not None else "E")
        current = upper
    return " ".join(tokens)


def decode_sampled_data(data: str, start: int, period_ms: float) -> Series:
    step = int(round(period_ms * TICKS_PER_MS))
    return [(start + i * step, token) for i, token in enumerate(data.split(" ")) if token != "E"]


def merge_series(existing: Series, new: Series) -> Series:
    """Merge by time; on an exact time collision the existing value is kept (MedTech's MergeData)."""
    out: Series = []
    i = j = 0
    while i < len(existing) or j < len(new):
        if i >= len(existing):
            out.append(new[j])
            j += 1
        elif j >= len(new) or existing[i][0] < new[j][0]:
            out.append(existing[i])
            i += 1
        elif existing[i][0] > new[j][0]:
            out.append(new[j])
            j += 1
        else:
            out.append(existing[i])
            i += 1
            j += 1
    return out


def build_value(spec: FhirValue, series: Series, period: tuple[int, int]) -> tuple[str, dict[str, Any] | str]:
    """The ``value[x]`` key and value for one template value; raises on bad Quantity data."""
    if spec.value_type == QUANTITY:
        if len(series) != 1:
            raise InvalidQuantityFhirValueException(f"Expected 1 value. Received {len(series)}.")
        try:
            number = _cached_decimal(series[0][1])
        except ValueError:
            raise InvalidQuantityFhirValueException(
                f"Error encountered processing value: {series[0][1]}."
            ) from None
        quantity: dict[str, Any] = {"value": number}
        if spec.unit is not None:
            quantity["unit"] = spec.unit
        if spec.system is not None:
            quantity["system"] = spec.system
        if spec.code is not None:
            quantity["code"] = spec.code
        return "valueQuantity", quantity
    if spec.value_type == STRING:
        if len(series) != 1:
            raise NotSupportedException(
                f"Expected 1 String value for {spec.value_name!r}. Received {len(series)}."
            )
        return "valueString", series[0][1]
    if spec.value_type == CODEABLE_CONCEPT:
        concept: dict[str, Any] = {"coding": [c.coding() for c in spec.codes]}
        if spec.text is not None:
            concept["text"] = spec.text
        return "valueCodeableConcept", concept
    assert spec.default_period is not None
    origin: dict[str, Any] = {"value": 0}
    if spec.unit is not None:
        origin["unit"] = spec.unit
    return "valueSampledData", {
        "origin": origin,
        "period": _number(spec.default_period),
        "dimensions": 1,
        "data": sampled_data(series, period[0], period[1], spec.default_period),
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def build_observation(
    template: CodeValueTemplate, group: ObservationGroup, identity: ResolvedIdentity, issued_ticks: int
) -> dict[str, Any]:
    """A new Observation for one group, as MedTech creates it (status final, deterministic id).

    Nested parts that are the same for every Observation of a template (``code``, ``category``,
    references) are shared between results: treat returned resources as read-only.
    """
    if group.correlation_id is None and group.start == group.end:
        start_text, segment = format_instant_texts(group.start)
        end_text = start_text
        segment = f"{segment}.{segment}"
    else:
        start_text, end_text = format_period_instant(group.start), format_period_instant(group.end)
        segment = group.segment()
    ident_value = f"{identity.patient_id}.{identity.device_id}.{group.type_name}.{segment}"
    parts = _shared_parts(template, group.type_name, identity)
    observation = _new_observation(
        parts, ident_value, observation_id(ident_value), start_text, end_text, format_issued(issued_ticks)
    )
    _add_values(observation, template, parts, group.values, (group.start, group.end))
    return observation


def _new_observation(
    parts: _SharedParts, ident_value: str, resource_id: str, start_text: str, end_text: str, issued_text: str
) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id,
        "identifier": [{"system": IOMT_SYSTEM, "value": ident_value}],
        "status": "final",
    }
    if parts.category is not None:
        observation["category"] = parts.category
    observation["code"] = parts.code
    observation["subject"] = parts.subject
    if parts.encounter is not None:
        observation["encounter"] = parts.encounter
    observation["effectivePeriod"] = {"start": start_text, "end": end_text}
    observation["issued"] = issued_text
    observation["device"] = parts.device
    return observation


def _add_values(
    observation: dict[str, Any],
    template: CodeValueTemplate,
    parts: _SharedParts,
    values: Mapping[str, Series],
    boundary: tuple[int, int],
) -> None:
    if template.value is not None:
        series = values.get(template.value.value_name)
        if series:
            key, value = build_value(template.value, series, boundary)
            observation[key] = value
    if template.components:
        components = []
        for component, code in zip(template.components, parts.component_codes, strict=True):
            series = values.get(component.value.value_name)
            if series:
                key, value = build_value(component.value, series, boundary)
                components.append({"code": code, key: value})
        if components:
            observation["component"] = components


@dataclass
class _SharedParts:
    code: dict[str, Any]
    category: list[dict[str, Any]] | None
    component_codes: list[dict[str, Any]]
    subject: dict[str, str]
    device: dict[str, str]
    encounter: dict[str, str] | None


# Keyed by template identity; the template is kept in the value so its id cannot be reused meanwhile.
_SHARED: dict[tuple[int, str, ResolvedIdentity], tuple[CodeValueTemplate, _SharedParts]] = {}


def _shared_parts(template: CodeValueTemplate, type_name: str, identity: ResolvedIdentity) -> _SharedParts:
    key = (id(template), type_name, identity)
    cached = _SHARED.get(key)
    if cached is not None and cached[0] is template:
        return cached[1]
    if len(_SHARED) > 4096:
        _SHARED.clear()
    parts = _SharedParts(
        code=_coding(template.codes, type_name),
        category=_categories(template) if template.category else None,
        component_codes=[_coding(c.codes, c.value.value_name) for c in template.components],
        subject={"reference": f"Patient/{identity.patient_id}"},
        device={"reference": f"Device/{identity.device_id}"},
        encounter={"reference": f"Encounter/{identity.encounter_id}"} if identity.encounter_id else None,
    )
    _SHARED[key] = (template, parts)
    return parts


def _categories(template: CodeValueTemplate) -> list[dict[str, Any]]:
    out = []
    for category in template.category:
        concept: dict[str, Any] = {"coding": [c.coding() for c in category.codes]}
        if category.text is not None:
            concept["text"] = category.text
        out.append(concept)
    return out


# ----------------------------------------------------------------------------- merge


def _value_key(resource: Mapping[str, Any]) -> str | None:
    for key in resource:
        if key.startswith("value") and key != "value":
            return key
    return None


def _effective(resource: Mapping[str, Any]) -> tuple[int, int]:
    try:
        if "effectivePeriod" in resource:
            period = resource["effectivePeriod"]
            return parse_timestamp(period["start"]), parse_timestamp(period["end"])
        if "effectiveDateTime" in resource:
            moment = parse_timestamp(resource["effectiveDateTime"])
            return moment, moment
    except (TimestampError, KeyError, TypeError) as exc:
        raise NotSupportedException(f"Observation effective time is unreadable: {exc}") from None
    raise NotSupportedException("Observation has no effective time")


def _iomt_name(component: Mapping[str, Any]) -> str | None:
    for coding in (component.get("code") or {}).get("coding") or []:
        if coding.get("system") == IOMT_SYSTEM:
            return str(coding.get("code"))
    return None


def _new_series(new_value: Mapping[str, Any], new_start: int, raw: Series | None) -> Series:
    if raw is not None:
        return raw
    return decode_sampled_data(str(new_value.get("data", "")), new_start, float(new_value["period"]))


def _merge_value(
    key: str,
    new_value: Any,
    existing_holder: Mapping[str, Any],
    raw: Series | None,
    new_period: tuple[int, int],
    existing_period: tuple[int, int],
) -> Any:
    existing_key = _value_key(existing_holder)
    if existing_key != key:
        raise NotSupportedException(
            f"existing value is {existing_key or 'missing'}, the template makes {key}; cannot merge"
        )
    if key != "valueSampledData":
        return copy.deepcopy(new_value)
    stored = existing_holder[key]
    if int(stored.get("dimensions", 1)) > 1:
        raise NotSupportedException("Existing SampledData value has more than 1 dimension.")
    period_ms = float(new_value["period"])
    decoded = decode_sampled_data(str(stored.get("data") or ""), existing_period[0], period_ms)
    if raw is not None:
        merged = merge_series(decoded, raw)  # MedTech's MergeData(existing, new): existing wins a tie
    else:
        # Decoded new slots sit on slot starts, so they would tie with every stored slot and lose;
        # a slot value stands for the latest reading in it, so the new one replaces the stored one.
        merged = merge_series(_new_series(new_value, new_period[0], None), decoded)
    start, end = min(new_period[0], existing_period[0]), max(new_period[1], existing_period[1])
    out = copy.deepcopy(stored)
    out["data"] = sampled_data(merged, start, end, period_ms)
    return out


def merge_observation(
    existing: Mapping[str, Any], new: Mapping[str, Any], raw_series: Mapping[str, Series] | None = None
) -> tuple[dict[str, Any], bool]:
    """Merge a freshly built Observation into the stored one with the same identifier.

    Returns the resource to write and whether it changed; when unchanged the caller skips the write.
    ``raw_series`` (valueName -> timed values, ``""`` for the main value) gives exact SampledData
    merges; without it the new SampledData string is decoded slot by slot.
    """
    merged = copy.deepcopy(dict(existing))
    existing_period = _effective(existing)
    new_period = _effective(new)
    raw_series = raw_series or {}
    if "category" in new:
        merged["category"] = copy.deepcopy(new["category"])
    else:
        merged.pop("category", None)
    new_key = _value_key(new)
    if new_key is not None:
        merged_value = _merge_value(
            new_key, new[new_key], existing, raw_series.get(""), new_period, existing_period
        )
        merged[new_key] = merged_value
    new_components = new.get("component") or []
    if new_components:
        stored_components = merged.setdefault("component", [])
        for component in new_components:
            name = _iomt_name(component)
            key = _value_key(component)
            found = next((c for c in stored_components if name is not None and _iomt_name(c) == name), None)
            if key is None:
                continue
            if found is None:
                added = copy.deepcopy(dict(component))
                if key == "valueSampledData":
                    value = component[key]
                    series = _new_series(value, new_period[0], raw_series.get(name or ""))
                    added[key]["data"] = sampled_data(series, *existing_period, float(value["period"]))
                stored_components.append(added)
            else:
                found[key] = _merge_value(
                    key, component[key], found, raw_series.get(name or ""), new_period, existing_period
                )
    start, end = min(existing_period[0], new_period[0]), max(existing_period[1], new_period[1])
    if (start, end) != existing_period or "effectivePeriod" not in existing:
        merged.pop("effectiveDateTime", None)
        merged["effectivePeriod"] = {"start": format_period_instant(start), "end": format_period_instant(end)}
    changed = merged != dict(existing)
    if changed:
        merged["status"] = "amended"
    return merged, changed


def raw_series_for(template: CodeValueTemplate, group: ObservationGroup) -> dict[str, Series] | None:
    """The timed values behind SampledData members, for exact merges (None when there are none)."""
    if not template.uses_sampled_data:
        return None
    out: dict[str, Series] = {}
    if template.value is not None and template.value.value_type == SAMPLED_DATA:
        out[""] = group.values.get(template.value.value_name, [])
    for component in template.components:
        if component.value.value_type == SAMPLED_DATA:
            out[component.value.value_name] = group.values.get(component.value.value_name, [])
    return out
