"""The generated standards-coded templates (LOINC/UCUM) convert messages of all ten data types."""

from __future__ import annotations

import pytest

from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import PatientReferenceIdentity
from tests.medtech.medtech_fitdata import (
    SUB,
    T0_NS,
    data_sources,
    fixture_json,
    message,
    point,
    sample_values,
)

SOURCES = data_sources()


@pytest.fixture(scope="module")
def converted():
    device, fhir = generate_templates(fixture_json("dataSources.json"), style="standard")
    converter = Converter(device, fhir, PatientReferenceIdentity({SUB: "patient-1"}), clock=lambda: 0)
    messages = []
    for source in SOURCES:
        name = source["dataType"]["name"]
        points = [point(name, T0_NS + i * 60_000_000_000, sample_values(source, i)) for i in range(2)]
        messages.append(message(source, points))
    return converter.convert(messages)


def test_every_point_of_every_stream_becomes_one_observation(converted):
    assert converted.dead_letters == []
    assert converted.points_matched == 2 * len(SOURCES)
    assert len(converted.observations) == 2 * len(SOURCES)
    types = {o["code"]["text"].split(":")[1] for o in converted.observations}
    assert len(types) == 10
    assert all(o["subject"] == {"reference": "Patient/patient-1"} for o in converted.observations)


def codings(obs: dict) -> set[tuple[str, str]]:
    return {(c.get("system", ""), c.get("code", "")) for c in obs["code"]["coding"]}


def test_heart_rate_is_loinc_coded_with_a_ucum_unit(converted):
    heart = [o for o in converted.observations if ":com.google.heart_rate.bpm:" in o["code"]["text"]]
    assert heart
    for obs in heart:
        assert ("http://loinc.org", "8867-4") in codings(obs)
        assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert obs["valueQuantity"]["code"] == "/min"
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"


def test_blood_pressure_is_a_panel_with_systolic_and_diastolic_components(converted):
    pressure = [o for o in converted.observations if ":com.google.blood_pressure:" in o["code"]["text"]]
    assert len(pressure) == 4
    for obs in pressure:
        assert ("http://loinc.org", "85354-9") in codings(obs)
        loinc = {
            c["code"]["coding"][0]["code"]: c["valueQuantity"]
            for c in obs["component"]
            if "valueQuantity" in c
        }
        assert loinc["8480-6"]["code"] == "mm[Hg]" and loinc["8462-4"]["code"] == "mm[Hg]"
