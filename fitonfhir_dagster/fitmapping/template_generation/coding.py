"""Standard codes for the Google Fit data types: LOINC concepts, UCUM units, observation categories.

Google gives values in fixed units (reference/google-fit-api-and-peers.md 1.4): bpm, metres, kg, degrees
Celsius, mmHg, mmol/L, percent, L/min. No conversion is needed, so each field only needs the UCUM code of
the unit Google already uses. What LOINC has no concept for (heart points, Google's enum fields) is coded in
the project's own code system. Every template also keeps the Google data type name as a coding so data
written with the original templates and with these stays findable by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GOOGLE_FIT = "https://fitonfhir.dev/fhir/CodeSystem/google-fit"
GOOGLE_FIT_DATA_TYPE = "https://fitonfhir.dev/fhir/CodeSystem/google-fit-data-type"

# periodInterval values MedTech understands: one Observation per measurement, per UTC hour, per UTC day.
INSTANCE, HOURLY, DAILY = 0, 60, 1440


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None

    def to_json(self) -> dict[str, str]:
        """MedTech FhirCode shape: ``{code, system, display}``."""
        out = {"code": self.code, "system": self.system}
        if self.display is not None:
            out["display"] = self.display
        return out


@dataclass(frozen=True)
class Unit:
    """A UCUM unit: ``unit`` is the human text, ``code`` the UCUM expression."""

    unit: str
    code: str

    def to_json(self) -> dict[str, str]:
        return {"unit": self.unit, "system": UCUM, "code": self.code}


@dataclass(frozen=True)
class FieldCoding:
    """How one numeric Google field is coded when it becomes an Observation component."""

    unit: Unit
    codes: tuple[Coding, ...] = ()


@dataclass(frozen=True)
class TypeCoding:
    """The FHIR shape of one Google data type.

    ``value_field`` becomes ``Observation.value``; every other field becomes a component.
    ``period_interval`` and ``why_period`` are documented in the README table (see ``coding_table``).
    """

    codes: tuple[Coding, ...]
    category: Coding | None
    value_field: str | None
    fields: Mapping[str, FieldCoding] = field(default_factory=dict)
    period_interval: int = INSTANCE
    why_period: str = ""

    def category_json(self) -> list[dict[str, Any]] | None:
        if self.category is None:
            return None
        return [{"text": self.category.display, "codes": [self.category.to_json()]}]


VITAL_SIGNS = Coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")
ACTIVITY = Coding(OBSERVATION_CATEGORY, "activity", "Activity")
LABORATORY = Coding(OBSERVATION_CATEGORY, "laboratory", "Laboratory")

_SPOT = "spot reading: one Observation each"
_INTERVAL = "each point covers its own interval; MedTech cannot sum Quantity values into hour/day buckets"

TYPE_CODINGS: dict[str, TypeCoding] = {
    "com.google.heart_rate.bpm": TypeCoding(
        codes=(Coding(LOINC, "8867-4", "Heart rate"),),
        category=VITAL_SIGNS,
        value_field="bpm",
        fields={"bpm": FieldCoding(Unit("beats/minute", "/min"))},
        why_period=(
            "irregular samples; hourly SampledData would keep only the last reading per slot, and "
            "MedTech ignores (managed) or fails on (OSS) hourly Quantity buckets"
        ),
    ),
    "com.google.step_count.delta": TypeCoding(
        codes=(Coding(LOINC, "55423-8", "Number of steps in unspecified time Pedometer"),),
        category=ACTIVITY,
        value_field="steps",
        fields={"steps": FieldCoding(Unit("steps", "{steps}"))},
        why_period=_INTERVAL,
    ),
    "com.google.weight": TypeCoding(
        codes=(Coding(LOINC, "29463-7", "Body weight"),),
        category=VITAL_SIGNS,
        value_field="weight",
        fields={"weight": FieldCoding(Unit("kg", "kg"))},
        why_period=_SPOT,
    ),
    "com.google.height": TypeCoding(
        codes=(Coding(LOINC, "8302-2", "Body height"),),
        category=VITAL_SIGNS,
        value_field="height",
        fields={"height": FieldCoding(Unit("m", "m"))},
        why_period=_SPOT,
    ),
    "com.google.body.temperature": TypeCoding(
        codes=(Coding(LOINC, "8310-5", "Body temperature"),),
        category=VITAL_SIGNS,
        value_field="body_temperature",
        fields={"body_temperature": FieldCoding(Unit("C", "Cel"))},
        why_period=_SPOT + ", site as a component",
    ),
    "com.google.oxygen_saturation": TypeCoding(
        codes=(
            Coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"),
            Coding(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        category=VITAL_SIGNS,
        value_field="oxygen_saturation",
        fields={
            "oxygen_saturation": FieldCoding(Unit("%", "%")),
            "supplemental_oxygen_flow_rate": FieldCoding(
                Unit("L/min", "L/min"), (Coding(LOINC, "3151-8", "Inhaled oxygen flow rate"),)
            ),
        },
        why_period=_SPOT + ", O2 flow and method as components",
    ),
    "com.google.blood_pressure": TypeCoding(
        codes=(Coding(LOINC, "85354-9", "Blood pressure panel with all children optional"),),
        category=VITAL_SIGNS,
        value_field=None,
        fields={
            "blood_pressure_systolic": FieldCoding(
                Unit("mmHg", "mm[Hg]"), (Coding(LOINC, "8480-6", "Systolic blood pressure"),)
            ),
            "blood_pressure_diastolic": FieldCoding(
                Unit("mmHg", "mm[Hg]"), (Coding(LOINC, "8462-4", "Diastolic blood pressure"),)
            ),
        },
        why_period=_SPOT + ", systolic/diastolic paired in one panel",
    ),
    "com.google.blood_glucose": TypeCoding(
        codes=(Coding(LOINC, "15074-8", "Glucose [Moles/volume] in Blood"),),
        category=LABORATORY,
        value_field="blood_glucose_level",
        fields={"blood_glucose_level": FieldCoding(Unit("mmol/L", "mmol/L"))},
        why_period=_SPOT + ", meal/sleep context as components",
    ),
    "com.google.body.fat.percentage": TypeCoding(
        codes=(Coding(LOINC, "41982-0", "Percentage of body fat Measured"),),
        category=None,
        value_field="percentage",
        fields={"percentage": FieldCoding(Unit("%", "%"))},
        why_period=_SPOT,
    ),
    "com.google.heart_minutes": TypeCoding(
        codes=(Coding(GOOGLE_FIT, "heart_minutes", "Heart Points (Google Fit heart minutes)"),),
        category=ACTIVITY,
        value_field="intensity",
        fields={"intensity": FieldCoding(Unit("heart points", "{heart_points}"))},
        why_period=_INTERVAL,
    ),
}

# Google's derived resting heart rate stream carries heart_rate.bpm points that mean "resting".
RESTING_HEART_RATE = Coding(LOINC, "40443-4", "Heart rate --resting")


def type_coding_for(data_type_name: str, stream_name: str) -> TypeCoding | None:
    """The standard coding of a data type, refined for streams with a more specific meaning."""
    coding = TYPE_CODINGS.get(data_type_name)
    if (
        coding is not None
        and data_type_name == "com.google.heart_rate.bpm"
        and stream_name.startswith("resting_heart_rate")
    ):
        return replace(coding, codes=(*coding.codes, RESTING_HEART_RATE))
    return coding


def google_field_coding(field_name: str) -> Coding:
    """Project code for a Google field LOINC has no concept for (the enum fields)."""
    return Coding(GOOGLE_FIT, field_name, field_name.replace("_", " ").capitalize())


def google_type_coding(code: str) -> Coding:
    """The original's code (Google data type name, or ``<type>.<field>``) as a coding with a system."""
    return Coding(GOOGLE_FIT_DATA_TYPE, code)


def coding_table() -> str:
    """Markdown table of the standard coding and periodInterval choices, for the README."""
    lines = [
        "| Google data type | Observation code | Value unit (UCUM) | Category | periodInterval | Why this period |",
        "|---|---|---|---|---|---|",
    ]
    for name, coding in TYPE_CODINGS.items():
        codes = ", ".join(f"{c.code} {c.display}" for c in coding.codes)
        units = list(dict.fromkeys(f"`{f.unit.code}`" for f in coding.fields.values()))
        category = coding.category.code if coding.category else "-"
        lines.append(
            f"| `{name}` | {codes} | {', '.join(units)} | {category} | {coding.period_interval} | {coding.why_period} |"
        )
    return "\n".join(lines)
