"""The Google Health data types this project imports, with the fields and time kind each one has.

Time kind decides the AIP-160 filter field: interval types filter on ``interval.start_time``, sample
types on ``sample_time.physical_time`` and daily types on ``date`` (discovery document, list ``filter``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["interval", "sample", "daily"]
SCOPE_PREFIX = "https://www.googleapis.com/auth/googlehealth."
ACTIVITY = "activity_and_fitness"
METRICS = "health_metrics_and_measurements"


@dataclass(frozen=True)
class HealthType:
    name: str  # kebab-case, the {type} of the REST path
    member: str  # the DataPoint union member (camelCase)
    kind: Kind
    value_field: str  # the reading inside the member
    int64_fields: tuple[str, ...]  # int64 members, strings on the wire
    scope_area: str
    fit_equivalent: str  # the Google Fit data type it replaces

    @property
    def snake(self) -> str:
        return self.name.replace("-", "_")

    @property
    def time_field(self) -> str:
        """The filter field of this type's time, e.g. ``steps.interval.start_time``."""
        suffix = {"interval": "interval.start_time", "sample": "sample_time.physical_time", "daily": "date"}
        return f"{self.snake}.{suffix[self.kind]}"

    @property
    def scope(self) -> str:
        return f"{SCOPE_PREFIX}{self.scope_area}.readonly"


TYPES: dict[str, HealthType] = {
    t.name: t
    for t in (
        HealthType(
            "heart-rate",
            "heartRate",
            "sample",
            "beatsPerMinute",
            ("beatsPerMinute",),
            METRICS,
            "com.google.heart_rate.bpm",
        ),
        HealthType(
            "steps", "steps", "interval", "count", ("count",), ACTIVITY, "com.google.step_count.delta"
        ),
        HealthType("weight", "weight", "sample", "weightGrams", (), METRICS, "com.google.weight"),
        HealthType(
            "height",
            "height",
            "sample",
            "heightMillimeters",
            ("heightMillimeters",),
            METRICS,
            "com.google.height",
        ),
        HealthType(
            "core-body-temperature",
            "coreBodyTemperature",
            "sample",
            "temperatureCelsius",
            (),
            METRICS,
            "com.google.body.temperature",
        ),
        HealthType(
            "oxygen-saturation",
            "oxygenSaturation",
            "sample",
            "percentage",
            (),
            METRICS,
            "com.google.oxygen_saturation",
        ),
        HealthType(
            "blood-glucose",
            "bloodGlucose",
            "sample",
            "bloodGlucoseMilligramsPerDeciliter",
            (),
            METRICS,
            "com.google.blood_glucose",
        ),
        HealthType(
            "body-fat", "bodyFat", "sample", "percentage", (), METRICS, "com.google.body.fat.percentage"
        ),
        HealthType(
            "active-zone-minutes",
            "activeZoneMinutes",
            "interval",
            "activeZoneMinutes",
            ("activeZoneMinutes",),
            ACTIVITY,
            "com.google.heart_minutes",
        ),
        HealthType(
            "daily-oxygen-saturation",
            "dailyOxygenSaturation",
            "daily",
            "averagePercentage",
            (),
            METRICS,
            "com.google.oxygen_saturation",
        ),
    )
}

# The nine types with a Fit equivalent (blood pressure has none); the default import.
DEFAULT_TYPE_NAMES: tuple[str, ...] = tuple(n for n in TYPES if n != "daily-oxygen-saturation")
IDENTITY_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"


class UnknownHealthType(ValueError):
    """A configured name that is not a Google Health type of this catalog."""


def selected_types(names: Iterable[str] = ()) -> list[HealthType]:
    """The catalog entries for ``names`` (FITONFHIR_HEALTH_DATA_TYPES); empty means the nine defaults."""
    wanted = list(names) or list(DEFAULT_TYPE_NAMES)
    unknown = [n for n in wanted if n not in TYPES]
    if unknown:
        raise UnknownHealthType(
            f"FITONFHIR_HEALTH_DATA_TYPES: unknown Google Health type(s) {unknown}; known: {', '.join(TYPES)}"
        )
    return [TYPES[n] for n in wanted]


def scopes_for(names: Iterable[str] = ()) -> tuple[str, ...]:
    """Profile (for the id_token) plus the ``googlehealth.*.readonly`` scopes the selected types need."""
    areas = dict.fromkeys(t.scope for t in selected_types(names))
    return (IDENTITY_SCOPE, *areas)
