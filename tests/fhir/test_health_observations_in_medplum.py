"""Observations converted from Google Health data points are accepted by Medplum (R4 validation of each)."""

from datetime import date

import orjson

from fitonfhir_dagster.fhir import FhirClient
from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.googlehealth.health_catalog import DEFAULT_TYPE_NAMES, TYPES
from fitonfhir_dagster.googlehealth.health_wire import parse_page
from fitonfhir_dagster.healthmapping.health_messages import build_health_messages
from fitonfhir_dagster.healthmapping.health_templates import with_health_templates
from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import PatientReferenceIdentity
from fitonfhir_sandbox import health_synthetic

SUB = "100000000000000000077"


def _first_points(type_name: str) -> list[dict]:
    """Up to three sandbox points of the first day that has some (height is weekly)."""
    health_type = TYPES[type_name]
    day = (date(2025, 3, 2) - date(1970, 1, 1)).days
    while not health_synthetic.day_points(SUB, type_name, day):
        day += 1
    truth = health_synthetic.day_points(SUB, type_name, day)[:3]
    body = orjson.dumps({"dataPoints": [health_synthetic.data_point(health_type, p, "list") for p in truth]})
    return parse_page(body, health_type, 0)[0]


def test_observations_of_every_health_type_are_accepted_by_medplum_and_a_rewrite_changes_nothing(medplum_url):
    fhir = FhirClient(medplum_url, bundle_size=20)
    patient = fhir.create({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": SUB}]})
    device, mapping = with_health_templates(*generate_templates(sample_data_sources(), catch_all=True))
    converter = Converter(device, mapping, PatientReferenceIdentity({SUB: patient["id"]}), points_key="point")
    messages = [
        orjson.loads(m.body)
        for name in DEFAULT_TYPE_NAMES
        for m in build_health_messages(SUB, name, "list", [{"point": _first_points(name)}])
    ]
    result = converter.convert(messages)
    assert result.dead_letters == [] and result.unmatched == []
    assert result.points_observed == result.points_in == sum(len(m["point"]) for m in messages)

    fhir.upsert_many(result.devices)
    written = fhir.upsert_many(result.observations)
    assert written.written == len(result.observations)
    stored = fhir.read_many("Observation", [o["id"] for o in result.observations])
    assert set(stored) == {o["id"] for o in result.observations}

    again = fhir.upsert_many(result.observations)
    assert (again.created, again.updated, again.unchanged) == (0, 0, len(result.observations))
