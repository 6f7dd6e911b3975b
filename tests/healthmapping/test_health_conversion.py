"""Every Google Health type converts to a coded Observation with the same MedTech engine as Fit."""

from __future__ import annotations

from datetime import date

import orjson
import pytest

from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.googlehealth.health_catalog import DEFAULT_TYPE_NAMES, TYPES
from fitonfhir_dagster.googlehealth.health_wire import parse_page
from fitonfhir_dagster.healthmapping.health_messages import build_health_messages
from fitonfhir_dagster.healthmapping.health_templates import with_health_templates
from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import PatientReferenceIdentity
from fitonfhir_sandbox import health_synthetic

SUB = "100000000000000000042"
DAY = (date(2025, 3, 2) - date(1970, 1, 1)).days


def _pages(type_name: str, day: int, view: str = "list") -> list[dict]:
    """One archived page of the type's sandbox points for DAY, as the client keeps it."""
    health_type = TYPES[type_name]
    points = [
        health_synthetic.data_point(health_type, p, view)
        for p in health_synthetic.day_points(SUB, type_name, day)
    ]
    good, _, bad = parse_page(orjson.dumps({"dataPoints": points}), health_type, 0)
    assert not bad
    return [{"point": good}]


def _convert(type_name: str, day: int = DAY, view: str = "list"):
    device, fhir = with_health_templates(*generate_templates(sample_data_sources(), catch_all=True))
    converter = Converter(device, fhir, PatientReferenceIdentity({SUB: "patient-1"}), points_key="point")
    messages = [
        orjson.loads(m.body)
        for m in build_health_messages(SUB, type_name, view, _pages(type_name, day, view))
    ]
    return converter.convert(messages), messages


def _first_day_with(type_name: str) -> int:
    day = DAY
    while not health_synthetic.day_points(SUB, type_name, day):
        day += 1
    return day


@pytest.mark.parametrize("type_name", DEFAULT_TYPE_NAMES)
def test_every_point_of_every_type_becomes_an_observation(type_name):
    result, messages = _convert(type_name, _first_day_with(type_name))

    points = sum(len(m["point"]) for m in messages)
    assert points and result.points_in == points == result.points_observed
    assert not result.dead_letters and not result.unmatched
    for observation in result.observations:
        assert observation["subject"] == {"reference": "Patient/patient-1"}
        codes = {c["system"]: c["code"] for c in observation["code"]["coding"]}
        assert codes["https://fitonfhir.dev/fhir/CodeSystem/google-health-data-type"] == type_name
        assert observation["valueQuantity"]["system"] == "http://unitsofmeasure.org"


def test_units_are_converted_to_the_projects_coding():
    for type_name, wire, unit, factor in (
        ("weight", "weightGrams", "kg", 1000),
        ("height", "heightMillimeters", "m", 1000),
        ("blood-glucose", "bloodGlucoseMilligramsPerDeciliter", "mg/dL", 1),
    ):
        day = _first_day_with(type_name)
        point = health_synthetic.day_points(SUB, type_name, day)[0]
        result, _ = _convert(type_name, day)
        observation = min(result.observations, key=lambda o: o["effectivePeriod"]["start"])
        assert observation["valueQuantity"]["code"] == unit
        assert observation["valueQuantity"]["value"] == pytest.approx(float(point[3][wire]) / factor)


def test_the_same_points_give_the_same_observation_ids_and_each_source_its_own_device():
    first, messages = _convert("steps")
    again, _ = _convert("steps")
    reconciled, reconciled_messages = _convert("steps", view="reconcile")

    assert [o["id"] for o in first.observations] == [o["id"] for o in again.observations]
    devices = {m["deviceIdentifier"] for m in messages}
    assert all(d.startswith(f"{SUB}.google-health.") for d in devices)
    assert {m["deviceIdentifier"] for m in reconciled_messages} == {f"{SUB}.google-health.reconciled"}
    assert not {o["id"] for o in reconciled.observations} & {o["id"] for o in first.observations}


def test_glucose_context_is_kept_as_coded_text_components():
    result, _ = _convert("blood-glucose", _first_day_with("blood-glucose"))
    codes = [c["code"]["coding"][0]["code"] for o in result.observations for c in o.get("component", [])]
    assert "blood_glucose.measurementSource" in codes
