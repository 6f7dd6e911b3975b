"""Deterministic Google Health v4 data points, derived from the same per-user truth as the Fit data.

Each Fit measurement of a type with a Health equivalent becomes one Health data point of the same instant,
in Health units (grams, millimetres, mg/dL, active zone minutes) and Health field names. Its Fit origin
stream becomes the point's ``dataSource`` (watch: FITBIT, phone: HEALTH_CONNECT, typed in: manual entry);
the reconciled view is the same points without ``dataSource``. Points appear once uploaded
(``modifiedTimeMillis`` of the Fit twin), so late data exists here too.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from fitonfhir_dagster.googlefit import catalog as fit_catalog
from fitonfhir_dagster.googlehealth.health_catalog import TYPES, HealthType

from . import synthetic

MG_DL_PER_MMOL_L = 18.016  # glucose (180.16 g/mol): 1 mmol/L = 18.016 mg/dL
_FIT_LOCATION = fit_catalog.ENUMS["body_temperature_measurement_location"]
_LOCATION = {  # Fit body temperature location -> Health measurementLocation
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_AXILLARY": "ARMPIT",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_FINGER": "FINGER",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_FOREHEAD": "FOREHEAD",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_ORAL": "MOUTH",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_RECTAL": "RECTUM",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TEMPORAL_ARTERY": "TEMPORAL_ARTERY",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TOE": "TOE",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_TYMPANIC": "EAR_DRUM",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_WRIST": "WRIST",
    "BODY_TEMPERATURE_MEASUREMENT_LOCATION_VAGINAL": "VAGINA",
}
_MEAL = ("MEAL_TYPE_UNSPECIFIED", "MEAL_TYPE_UNSPECIFIED", "BREAKFAST", "LUNCH", "DINNER", "SNACK")
_TIMING = ("MEASUREMENT_TIMING_UNSPECIFIED", "GENERAL", "FASTING", "BEFORE_MEAL", "AFTER_MEAL")
_SPECIMEN = (
    "SPECIMEN_UNSPECIFIED",
    "INTERSTITIAL_FLUID",
    "CAPILLARY_BLOOD",
    "PLASMA",
    "SERUM",
    "TEARS",
    "WHOLE_BLOOD",
)
NOT_LINKED_MARKER = "+nohealth"  # ``name+nohealth@...``: a Google account without Google Health


def health_user_id(sub: str) -> str:
    """A stable numeric Health user id per account (not the sub: Google keeps them apart)."""
    return str(int.from_bytes(hashlib.sha256(f"health|{sub}".encode()).digest()[:8], "big"))


def is_linked(email: str) -> bool:
    return NOT_LINKED_MARKER not in email.split("@", 1)[0]


def rfc3339(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ms % 1000:03d}Z" if ms % 1000 else "Z")


def _civil(ms: int) -> dict[str, Any]:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    time: dict[str, int] = {}
    for name, value in (("hours", moment.hour), ("minutes", moment.minute), ("seconds", moment.second)):
        if value:
            time[name] = value
    if ms % 1000:
        time["nanos"] = (ms % 1000) * 1_000_000
    return {"date": {"year": moment.year, "month": moment.month, "day": moment.day}, "time": time}


def _sample_time(ms: int) -> dict[str, Any]:
    return {"physicalTime": rfc3339(ms), "utcOffset": "0s", "civilTime": _civil(ms)}


def _interval(start: int, end: int) -> dict[str, Any]:
    return {
        "startTime": rfc3339(start),
        "startUtcOffset": "0s",
        "endTime": rfc3339(end),
        "endUtcOffset": "0s",
        "civilStartTime": _civil(start),
        "civilEndTime": _civil(end),
    }


def data_source(stream_id: str) -> dict[str, Any]:
    """The Health ``dataSource`` of a Fit origin stream."""
    if ":watch:" in stream_id:
        return {
            "platform": "FITBIT",
            "recordingMethod": "PASSIVELY_MEASURED",
            "device": {"displayName": "Pixel Watch", "formFactor": "WATCH", "manufacturer": "Google"},
            "application": {"packageName": "com.google.fitbit"},
        }
    if stream_id.endswith(":user_input") or ":user_input" in stream_id:
        return {
            "platform": "GOOGLE_WEB_API",
            "recordingMethod": "MANUAL",
            "application": {"packageName": "com.google.android.apps.fitness"},
        }
    device = {"displayName": "Pixel phone", "formFactor": "PHONE", "manufacturer": "Google"}
    if ":scale:" in stream_id:
        device = {"displayName": "Smart scale", "formFactor": "SCALE", "manufacturer": "Withings"}
    return {
        "platform": "HEALTH_CONNECT",
        "recordingMethod": "ACTIVELY_MEASURED" if stream_id.startswith("raw:") else "DERIVED",
        "device": device,
        "application": {"packageName": "com.google.android.apps.healthdata"},
    }


def _values(values: synthetic.Values) -> list[float | int]:
    return [v for _, v in values]


def _member(health_type: HealthType, start: int, end: int, values: synthetic.Values) -> dict[str, Any]:
    v = _values(values)
    name = health_type.name
    if name == "heart-rate":
        return {
            "beatsPerMinute": str(round(v[0])),
            "metadata": {"motionContext": "SEDENTARY", "sensorLocation": "WRIST"},
            "sampleTime": _sample_time(start),
        }
    if name == "steps":
        return {"count": str(int(v[0])), "interval": _interval(start, end)}
    if name == "active-zone-minutes":
        zone = "CARDIO" if v[0] >= 2 else "FAT_BURN"
        return {"activeZoneMinutes": str(int(v[0])), "heartRateZone": zone, "interval": _interval(start, end)}
    if name == "weight":
        return {"weightGrams": round(float(v[0]) * 1000, 1), "sampleTime": _sample_time(start)}
    if name == "height":
        return {"heightMillimeters": str(round(float(v[0]) * 1000)), "sampleTime": _sample_time(start)}
    if name == "body-fat":
        return {"percentage": float(v[0]), "sampleTime": _sample_time(start)}
    if name == "oxygen-saturation":
        return {"percentage": float(v[0]), "sampleTime": _sample_time(start)}
    if name == "core-body-temperature":
        member: dict[str, Any] = {"temperatureCelsius": float(v[0]), "sampleTime": _sample_time(start)}
        if len(v) > 1 and 0 < int(v[1]) < len(_FIT_LOCATION):
            member["measurementLocation"] = _LOCATION.get(_FIT_LOCATION[int(v[1])], "OTHER")
        return member
    if name == "blood-glucose":
        member = {
            "bloodGlucoseMilligramsPerDeciliter": round(float(v[0]) * MG_DL_PER_MMOL_L, 1),
            "sampleTime": _sample_time(start),
            "measurementSource": "SELF_MONITORING_BLOOD_GLUCOSE",
        }
        if len(v) > 1 and int(v[1]) < len(_TIMING):
            member["measurementTiming"] = _TIMING[int(v[1])]
        if len(v) > 2 and int(v[2]) < len(_MEAL):
            member["mealType"] = _MEAL[int(v[2])]
        if len(v) > 4 and int(v[4]) < len(_SPECIMEN):
            member["specimen"] = _SPECIMEN[int(v[4])]
        return member
    raise ValueError(f"no synthetic mapping for {name!r}")


# (start_ms, end_ms, seq, member, origin stream id, visible_from_ms)
HealthTruth = tuple[int, int, int, dict[str, Any], str, int]


@lru_cache(maxsize=2048)
def day_points(sub: str, type_name: str, day: int) -> tuple[HealthTruth, ...]:
    """One type's points of one UTC day (days since 1970-01-01), oldest first."""
    health_type = TYPES[type_name]
    if health_type.kind == "daily":
        return _daily(sub, health_type, day)
    origins = synthetic.origins(sub, health_type.fit_equivalent)
    out = []
    for start, end, seq, values, origin, modified in synthetic.truth(sub, health_type.fit_equivalent, day):
        out.append((start, end, seq, _member(health_type, start, end, values), origins[origin], modified))
    return tuple(out)


def _daily(sub: str, health_type: HealthType, day: int) -> tuple[HealthTruth, ...]:
    readings = synthetic.truth(sub, health_type.fit_equivalent, day)
    if not readings:
        return ()
    values = [float(r[3][0][1]) for r in readings]
    mean = sum(values) / len(values)
    the_day = date.fromordinal(date(1970, 1, 1).toordinal() + day)
    member = {
        "averagePercentage": round(mean, 2),
        "lowerBoundPercentage": min(values),
        "upperBoundPercentage": max(values),
        "date": {"year": the_day.year, "month": the_day.month, "day": the_day.day},
    }
    start = day * synthetic.MS_PER_DAY
    visible = max(r[5] for r in readings) + synthetic.MS_PER_HOUR
    return ((start, start, 0, member, synthetic.origins(sub, health_type.fit_equivalent)[0], visible),)


def data_point(health_type: HealthType, truth: HealthTruth, view: str) -> dict[str, Any]:
    """The wire JSON of one point: ``list`` carries its ``dataSource``, ``reconcile`` does not."""
    point: dict[str, Any] = {}
    if view == "list":
        point["dataSource"] = data_source(truth[4])
    point[health_type.member] = truth[3]
    return point
