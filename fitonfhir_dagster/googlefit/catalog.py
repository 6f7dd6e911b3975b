"""The ten Google Fit data types the original project mapped, with their fields and enums.

The field layouts come from the original's sample ``dataSources.json`` (shipped next to this module),
so the sandbox, the template generator and the import all agree on one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Field:
    name: str
    format: str  # floatPoint | integer | string | map
    optional: bool = False

    @property
    def value_key(self) -> str:
        return {"floatPoint": "fpVal", "integer": "intVal", "string": "stringVal", "map": "mapVal"}[
            self.format
        ]


@dataclass(frozen=True)
class DataType:
    name: str
    fields: tuple[Field, ...]


@cache
def sample_data_sources() -> list[dict[str, Any]]:
    """The 34 data sources of the original's sample (10 types, raw and derived streams)."""
    text = resources.files(__package__).joinpath("sample_data_sources.json").read_text("utf-8")
    return list(json.loads(text)["dataSource"])


@cache
def data_types() -> dict[str, DataType]:
    found: dict[str, DataType] = {}
    for source in sample_data_sources():
        dt = source["dataType"]
        if dt["name"] not in found:
            found[dt["name"]] = DataType(
                dt["name"],
                tuple(Field(f["name"], f["format"], bool(f.get("optional", False))) for f in dt["field"]),
            )
    return dict(sorted(found.items()))


DATA_TYPE_NAMES: tuple[str, ...] = (
    "com.google.blood_glucose",
    "com.google.blood_pressure",
    "com.google.body.fat.percentage",
    "com.google.body.temperature",
    "com.google.heart_minutes",
    "com.google.heart_rate.bpm",
    "com.google.height",
    "com.google.oxygen_saturation",
    "com.google.step_count.delta",
    "com.google.weight",
)

# Google's integer enums, index = value (reference/original-fit-on-fhir.md 6.5).
ENUMS: dict[str, tuple[str, ...]] = {
    "temporal_relation_to_meal": (
        "UNSPECIFIED",
        "FIELD_TEMPORAL_RELATION_TO_MEAL_GENERAL",
        "FIELD_TEMPORAL_RELATION_TO_MEAL_FASTING",
        "FIELD_TEMPORAL_RELATION_TO_MEAL_BEFORE_MEAL",
        "FIELD_TEMPORAL_RELATION_TO_MEAL_AFTER_MEAL",
    ),
    "meal_type": (
        "UNSPECIFIED",
        "MEAL_TYPE_UNKNOWN",
        "MEAL_TYPE_BREAKFAST",
        "MEAL_TYPE_LUNCH",
        "MEAL_TYPE_DINNER",
        "MEAL_TYPE_SNACK",
    ),
    "temporal_relation_to_sleep": (
        "UNSPECIFIED",
        "TEMPORAL_RELATION_TO_SLEEP_FULLY_AWAKE",
        "TEMPORAL_RELATION_TO_SLEEP_BEFORE_SLEEP",
        "TEMPORAL_RELATION_TO_SLEEP_ON_WAKING",
        "TEMPORAL_RELATION_TO_SLEEP_DURING_SLEEP",
    ),
    "blood_glucose_specimen_source": (
        "UNSPECIFIED",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_INTERSTITIAL_FLUID",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_CAPILLARY_BLOOD",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_PLASMA",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_SERUM",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_TEARS",
        "BLOOD_GLUCOSE_SPECIMEN_SOURCE_WHOLE_BLOOD",
    ),
    "body_position": (
        "UNSPECIFIED",
        "BODY_POSITION_STANDING",
        "BODY_POSITION_SITTING",
        "BODY_POSITION_LYING_DOWN",
        "BODY_POSITION_SEMI_RECUMBENT",
    ),
    "blood_pressure_measurement_location": (
        "UNSPECIFIED",
        "BLOOD_PRESSURE_MEASUREMENT_LOCATION_LEFT_WRIST",
        "BLOOD_PRESSURE_MEASUREMENT_LOCATION_RIGHT_WRIST",
        "BLOOD_PRESSURE_MEASUREMENT_LOCATION_LEFT_UPPER_ARM",
        "BLOOD_PRESSURE_MEASUREMENT_LOCATION_RIGHT_UPPER_ARM",
    ),
    "body_temperature_measurement_location": (
        "UNSPECIFIED",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_AXILLARY",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_FINGER",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_FOREHEAD",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_ORAL",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_RECTAL",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TEMPORAL_ARTERY",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TOE",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TYMPANIC",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_WRIST",
        "BODY_TEMPERATURE_MEASUREMENT_LOCATION_VAGINAL",
    ),
    "oxygen_therapy_administration_mode": ("UNSPECIFIED", "OXYGEN_THERAPY_ADMINISTRATION_MODE_NASAL_CANULA"),
    "oxygen_saturation_system": ("UNSPECIFIED", "OXYGEN_SATURATION_SYSTEM_PERIPHERAL_CAPILLARY"),
    "oxygen_saturation_measurement_method": (
        "UNSPECIFIED",
        "OXYGEN_SATURATION_MEASUREMENT_METHOD_PULSE_OXIMETRY",
    ),
}


def is_merged_stream(data_stream_id: str) -> bool:
    """Google's de-duplicated union streams ("merge_*"/"merged" from com.google.android.gms)."""
    parts = data_stream_id.split(":")
    return (
        parts[0] == "derived"
        and len(parts) >= 4
        and parts[2] == "com.google.android.gms"
        and (parts[-1].startswith("merge"))
    )
