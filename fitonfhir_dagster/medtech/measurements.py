"""Normalisation: a device message and the device mapping give measurements, as MedTech's first stage.

The message is wrapped as ``{"Body", "Properties", "SystemProperties"}`` and tested against every
template; each token the type match returns is one measurement. Values become strings the way .NET
writes them (``72.0`` -> ``"72"``, ``True``). Unlike MedTech, a failing match is reported on its own
and the other matches of the same message still convert.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fitonfhir_dagster.medtech.device_templates import (
    ContentTemplate,
    DeviceMapping,
    Expression,
    ExpressionError,
)
from fitonfhir_dagster.medtech.jmespath_functions import DateTimeValue
from fitonfhir_dagster.medtech.jsonpath import MISSING
from fitonfhir_dagster.medtech.medtech_errors import (
    ConversionError,
    IncompatibleDataException,
    TemplateExpressionException,
)
from fitonfhir_dagster.medtech.timestamps import (
    TimestampError,
    check_range,
    format_dotnet_default,
    format_period_instant,
    parse_timestamp,
)


@dataclass(slots=True)
class Measurement:
    """One normalised reading (MedTech's ``Measurement``); property values are always strings."""

    type: str
    device_id: str
    occurrence_ticks: int
    patient_id: str | None = None
    encounter_id: str | None = None
    correlation_id: str | None = None
    properties: list[tuple[str, str]] = field(default_factory=list)
    message_index: int = 0
    origin: int = -1  # which counted item (Fit point) of the batch it came from; -1: not tracked

    @property
    def occurrence_time_utc(self) -> str:
        return format_period_instant(self.occurrence_ticks)

    def to_dict(self) -> dict[str, Any]:
        """The camelCase shape MedTech's mapping debugger shows, nulls left out."""
        out: dict[str, Any] = {
            "type": self.type,
            "occurrenceTimeUtc": self.occurrence_time_utc,
            "deviceId": self.device_id,
        }
        for key, value in (
            ("patientId", self.patient_id),
            ("encounterId", self.encounter_id),
            ("correlationId", self.correlation_id),
        ):
            if value is not None:
                out[key] = value
        out["properties"] = [{"name": n, "value": v} for n, v in self.properties]
        return out


@dataclass
class MatchFailure:
    """One match (or a whole template for a message) that produced no measurement, and why."""

    error: ConversionError
    template_index: int
    match_index: int | None
    token: Any = None  # the matched token, when ``extract`` was asked to report tokens


def wrap_message(
    body: Any, properties: Mapping[str, Any] | None = None, system_properties: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The event as MedTech's templates see it."""
    return {
        "Body": body,
        "Properties": dict(properties or {}),
        "SystemProperties": dict(system_properties or {}),
    }


class _NotText(Exception):
    pass


def dotnet_double_text(value: float) -> str:
    """A double as .NET (Core 3.0+) writes it: shortest round-trip, ``E+XX`` outside 1e-5..1e15."""
    if value == 0 or 1e-4 <= abs(value) < 1e15:
        text = repr(value)  # fixed notation in this range, shortest round-trip like .NET
        return text[:-2] if text.endswith(".0") else text
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    exponent += len(digits) - len(text)
    sci = exponent + len(text) - 1
    prefix = "-" if sign else ""
    if text == "0":
        return prefix + "0"
    if -5 < sci < 15:
        if exponent >= 0:
            return prefix + text + "0" * exponent
        point = len(text) + exponent
        if point > 0:
            return prefix + text[:point] + "." + text[point:]
        return prefix + "0." + "0" * -point + text
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{prefix}{mantissa}E{'+' if sci >= 0 else '-'}{abs(sci):02d}"


def measurement_text(value: Any) -> str:
    """A JSON token as MedTech stores it in a measurement; objects and arrays cannot convert."""
    kind = type(value)
    if kind is str:
        return str(value)
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return str(value)
    if kind is float:
        return dotnet_double_text(value)
    if kind is DateTimeValue:
        return format_dotnet_default(value.ticks)
    raise _NotText(kind.__name__)


def timestamp_ticks(value: Any) -> int:
    """A token as a UTC instant: date-time values and ISO text; a JSON number is not a date-time."""
    if type(value) is DateTimeValue:
        return int(value.ticks)
    if type(value) is str:
        return check_range(parse_timestamp(value))
    raise TimestampError(f"{value!r} is not a date-time")


def _blank(value: Any) -> bool:
    return value is MISSING or value is None or (type(value) is str and not value.strip())


class MeasurementExtractor:
    """Applies every template of a device mapping to wrapped messages."""

    def __init__(self, mapping: DeviceMapping):
        self.templates = mapping.templates

    def extract(
        self, wrapped: dict[str, Any], message_index: int = 0, tokens: list[Any] | None = None
    ) -> tuple[list[Measurement], list[MatchFailure]]:
        """Measurements and failures of one message; ``tokens``, if given, receives the matched token of
        each measurement (same order), and each failure of a match carries its token."""
        measurements: list[Measurement] = []
        failures: list[MatchFailure] = []
        scan_cache: dict[Any, Any] = {}
        for template in self.templates:
            try:
                matches = template.type_match.select(wrapped, scan_cache)
            except ExpressionError as exc:
                failures.append(
                    MatchFailure(
                        TemplateExpressionException(f"typeMatchExpression failed: {exc}", template.where),
                        template.index,
                        None,
                    )
                )
                continue
            scoped = template.matched_token_scope
            memo: dict[int, Any] = {}
            for match_index, token in enumerate(matches):
                scope = {**wrapped, "matchedToken": token} if scoped else token
                try:
                    measurements.append(
                        self._measure(template, scope, message_index, memo if scoped else None)
                    )
                    if tokens is not None:
                        tokens.append(token)
                except ConversionError as exc:
                    exc.detail = f"{template.where}, match {match_index}"
                    failures.append(MatchFailure(exc, template.index, match_index, token))
        return measurements, failures

    def iter_measurements(self, wrapped: dict[str, Any]) -> Iterator[Measurement]:
        """Measurements only, for callers that treat any failure as fatal (raises the first error)."""
        found, failures = self.extract(wrapped)
        if failures:
            raise failures[0].error
        yield from found

    @staticmethod
    def _select(expression: Expression, scope: Any, name: str, memo: dict[int, Any] | None = None) -> Any:
        """One value; ``memo`` (per message and template) keeps values that do not depend on the match."""
        if memo is not None and expression.reads_message_only:
            key = id(expression)
            if key in memo:
                return memo[key]
        try:
            value = expression.select_one(scope)
        except ExpressionError as exc:
            raise TemplateExpressionException(f"{name}: {exc}") from None
        if memo is not None and expression.reads_message_only:
            memo[id(expression)] = value
        return value

    def _required_text(
        self, expression: Expression, scope: Any, name: str, memo: dict[int, Any] | None = None
    ) -> str:
        value = self._select(expression, scope, name, memo)
        if _blank(value):
            raise IncompatibleDataException(
                f"Unable to extract required value for [{name}] using {expression.text}"
            )
        try:
            return measurement_text(value)
        except _NotText:
            raise IncompatibleDataException(
                f"Unable to convert value for [{name}] using {expression.text}: {type(value).__name__} is not a value"
            ) from None

    def _optional_text(
        self, expression: Expression | None, scope: Any, name: str, memo: dict[int, Any] | None = None
    ) -> str | None:
        if expression is None:
            return None
        value = self._select(expression, scope, name, memo)
        if _blank(value):
            return None
        try:
            return measurement_text(value)
        except _NotText:
            return None

    def _measure(
        self, template: ContentTemplate, scope: Any, message_index: int, memo: dict[int, Any] | None = None
    ) -> Measurement:
        device_id = self._required_text(template.device_id, scope, "DeviceId", memo)
        raw_time = self._select(template.timestamp, scope, "Timestamp")
        if _blank(raw_time) and template.timestamp_fallback is not None:
            raw_time = self._select(template.timestamp_fallback, scope, "Timestamp")
        if _blank(raw_time):
            raise IncompatibleDataException(
                f"Unable to extract required value for [Timestamp] using {template.timestamp.text}"
            )
        try:
            ticks = timestamp_ticks(raw_time)
        except TimestampError as exc:
            raise IncompatibleDataException(f"Unable to convert value for [Timestamp]: {exc}") from None
        correlation_id = None
        if template.correlation_id is not None:
            correlation_id = self._required_text(template.correlation_id, scope, "CorrelationId")
        properties: list[tuple[str, str]] = []
        for value_template in template.values:
            value = self._select(value_template.expression, scope, value_template.name)
            if value is MISSING or value is None or (type(value) is str and not value.strip()):
                if value_template.required:
                    raise IncompatibleDataException(
                        f"Unable to extract required value for [{value_template.name}]"
                        f" using {value_template.expression.text}"
                    )
                if type(value) is str:
                    properties.append((value_template.name, value))
                continue
            try:
                properties.append((value_template.name, measurement_text(value)))
            except _NotText:
                if value_template.required:
                    raise IncompatibleDataException(
                        f"Unable to convert value for [{value_template.name}]: {type(value).__name__} is not a value"
                    ) from None
        return Measurement(
            type=template.type_name,
            device_id=device_id,
            occurrence_ticks=ticks,
            patient_id=self._optional_text(template.patient_id, scope, "PatientId", memo),
            encounter_id=self._optional_text(template.encounter_id, scope, "EncounterId", memo),
            correlation_id=correlation_id,
            properties=properties,
            message_index=message_index,
        )
