"""What our converter writes is accepted by a third-party FHIR server that validates every resource.

Medplum's fhir-router validates each resource against the R4 StructureDefinitions, so this checks the
Observations of all ten data types in both template styles, not just our own R4B models.
"""

import pytest

from fitonfhir_dagster.fhir import FhirClient
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


@pytest.mark.parametrize("style", ["standard", "original"])
def test_observations_of_every_stream_are_accepted_by_medplum_and_a_rewrite_changes_nothing(
    medplum_url, style
):
    fhir = FhirClient(medplum_url, bundle_size=20)  # Medplum allows at most 50 updates per transaction
    patient = fhir.create({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": SUB}]})
    device, mapping = generate_templates(fixture_json("dataSources.json"), style=style)
    converter = Converter(device, mapping, PatientReferenceIdentity({SUB: patient["id"]}))
    messages = [
        message(source, [point(source["dataType"]["name"], T0_NS + 60_000_000_000, sample_values(source, 1))])
        for source in data_sources()
    ]
    result = converter.convert(messages)
    assert result.dead_letters == [] and len(result.observations) == len(messages)

    fhir.upsert_many(result.devices)
    written = fhir.upsert_many(result.observations)
    assert written.written == len(result.observations)
    stored = fhir.read_many("Observation", [o["id"] for o in result.observations])
    assert set(stored) == {o["id"] for o in result.observations}
    assert all(o["subject"]["reference"] == f"Patient/{patient['id']}" for o in stored.values())

    again = fhir.upsert_many(result.observations)
    assert (again.created, again.updated, again.unchanged) == (0, 0, len(result.observations))
