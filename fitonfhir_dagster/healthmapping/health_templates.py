"""MedTech templates for Google Health data points, coded like the Fit templates (LOINC, UCUM, category).

Device templates are CalculatedContent over the ``point`` items of Health device messages; Health units
are converted where the project's coding uses another unit (weight g -> kg, height mm -> m) and declared
where it does not (glucose stays mg/dL, LOINC 2339-0 "Glucose [Mass/volume] in Blood", not Fit's mmol/L
15074-8). Every Observation keeps the Health type name under its own code system, as Fit keeps Google's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..fitmapping.template_generation.coding import (
    ACTIVITY,
    GOOGLE_FIT,
    LABORATORY,
    LOINC,
    VITAL_SIGNS,
    Coding,
    Unit,
)
from ..googlehealth.health_catalog import TYPES, HealthType

GOOGLE_HEALTH_DATA_TYPE = "https://fitonfhir.dev/fhir/CodeSystem/google-health-data-type"
TYPE_NAME_PREFIX = "google-health:"


@dataclass(frozen=True)
class HealthCoding:
    codes: tuple[Coding, ...]
    category: Coding | None
    value_name: str
    unit: Unit
    value_expression: str | dict[str, str]  # JsonPath on matchedToken, or a JmesPath conversion
    texts: tuple[str, ...] = ()  # enum members kept as String components


def _jmes(expression: str) -> dict[str, str]:
    """A JmesPath value; conversions divide by a float (`1000.0`): MedTech divides two ints as ints."""
    return {"value": expression, "language": "JmesPath"}


CODINGS: dict[str, HealthCoding] = {
    "heart-rate": HealthCoding(
        (Coding(LOINC, "8867-4", "Heart rate"),),
        VITAL_SIGNS,
        "beatsPerMinute",
        Unit("beats/minute", "/min"),
        "matchedToken.heartRate.beatsPerMinute",
    ),
    "steps": HealthCoding(
        (Coding(LOINC, "55423-8", "Number of steps in unspecified time Pedometer"),),
        ACTIVITY,
        "count",
        Unit("steps", "{steps}"),
        "matchedToken.steps.count",
    ),
    "weight": HealthCoding(
        (Coding(LOINC, "29463-7", "Body weight"),),
        VITAL_SIGNS,
        "weightKg",
        Unit("kg", "kg"),
        _jmes("divide(matchedToken.weight.weightGrams, `1000.0`)"),
    ),
    "height": HealthCoding(
        (Coding(LOINC, "8302-2", "Body height"),),
        VITAL_SIGNS,
        "heightMeters",
        Unit("m", "m"),
        _jmes("divide(matchedToken.height.heightMillimeters, `1000.0`)"),
    ),
    "core-body-temperature": HealthCoding(
        (Coding(LOINC, "8310-5", "Body temperature"),),
        VITAL_SIGNS,
        "temperatureCelsius",
        Unit("C", "Cel"),
        "matchedToken.coreBodyTemperature.temperatureCelsius",
        ("measurementLocation",),
    ),
    "oxygen-saturation": HealthCoding(
        (
            Coding(LOINC, "2708-6", "Oxygen saturation in Arterial blood"),
            Coding(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        VITAL_SIGNS,
        "percentage",
        Unit("%", "%"),
        "matchedToken.oxygenSaturation.percentage",
    ),
    "blood-glucose": HealthCoding(
        (Coding(LOINC, "2339-0", "Glucose [Mass/volume] in Blood"),),
        LABORATORY,
        "bloodGlucoseMilligramsPerDeciliter",
        Unit("mg/dL", "mg/dL"),
        "matchedToken.bloodGlucose.bloodGlucoseMilligramsPerDeciliter",
        ("specimen", "mealType", "measurementTiming", "measurementSource"),
    ),
    "body-fat": HealthCoding(
        (Coding(LOINC, "41982-0", "Percentage of body fat Measured"),),
        None,
        "percentage",
        Unit("%", "%"),
        "matchedToken.bodyFat.percentage",
    ),
    "active-zone-minutes": HealthCoding(
        (Coding(GOOGLE_FIT, "active_zone_minutes", "Active Zone Minutes (Google Health)"),),
        ACTIVITY,
        "activeZoneMinutes",
        Unit("active zone minutes", "{active_zone_minutes}"),
        "matchedToken.activeZoneMinutes.activeZoneMinutes",
        ("heartRateZone",),
    ),
}


def type_name(health_type: HealthType) -> str:
    return TYPE_NAME_PREFIX + health_type.name


def _timestamp(health_type: HealthType) -> str:
    member = f"matchedToken.{health_type.member}"
    if health_type.kind == "interval":
        return f"{member}.interval.endTime"  # as the Fit templates: a reading is stamped when it ends
    return f"{member}.sampleTime.physicalTime"


def device_template(health_type: HealthType) -> dict[str, Any]:
    coding = CODINGS[health_type.name]
    values: list[dict[str, Any]] = [
        {"valueName": coding.value_name, "valueExpression": coding.value_expression, "required": True}
    ]
    values += [
        {"valueName": text, "valueExpression": f"matchedToken.{health_type.member}.{text}"}
        for text in coding.texts
    ]
    return {
        "templateType": "CalculatedContent",
        "template": {
            "typeName": type_name(health_type),
            "typeMatchExpression": f"$.Body.point[?(@.{health_type.member} && $.Body.source == 'google-health')]",
            "deviceIdExpression": "$.Body.deviceIdentifier",
            "patientIdExpression": "$.Body.patientIdentifier",
            "timestampExpression": _timestamp(health_type),
            "values": values,
        },
    }


def fhir_template(health_type: HealthType) -> dict[str, Any]:
    coding = CODINGS[health_type.name]
    template: dict[str, Any] = {"typeName": type_name(health_type), "periodInterval": 0}
    if coding.category is not None:
        template["category"] = [{"text": coding.category.display, "codes": [coding.category.to_json()]}]
    own = Coding(GOOGLE_HEALTH_DATA_TYPE, health_type.name)
    template["codes"] = [c.to_json() for c in (*coding.codes, own)]
    template["value"] = {"valueName": coding.value_name, "valueType": "Quantity", **coding.unit.to_json()}
    if coding.texts:
        template["components"] = [
            {
                "codes": [
                    Coding(GOOGLE_FIT, f"{health_type.snake}.{text}", text).to_json(),
                    Coding(GOOGLE_HEALTH_DATA_TYPE, f"{health_type.name}.{text}").to_json(),
                ],
                "value": {"valueName": text, "valueType": "String"},
            }
            for text in coding.texts
        ]
    return {"templateType": "CodeValueFhir", "template": template}


def health_templates() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(device templates, FHIR templates) for every catalog type with a coding."""
    types = [TYPES[name] for name in CODINGS]
    return [device_template(t) for t in types], [fhir_template(t) for t in types]


def with_health_templates(
    device: dict[str, Any], fhir: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generated Fit collections plus the Health templates, so one conversion handles both sources."""
    health_device, health_fhir = health_templates()
    return (
        {**device, "template": [*device["template"], *health_device]},
        {**fhir, "template": [*fhir["template"], *health_fhir]},
    )
