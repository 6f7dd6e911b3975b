"""The FHIR client against two servers: our sandbox and Medplum's fhir-router (independent oracle).

Every scenario runs on both; version ids are treated as opaque (Medplum uses UUIDs, the sandbox 1, 2, 3).
Medplum's in-memory store lives for the session, so every test uses its own unique ids and identifiers.
"""

from __future__ import annotations

import uuid

import pytest

from fitonfhir_dagster.fhir import (
    FhirClient,
    InvalidResource,
    PreconditionFailed,
    identifier_query,
    post_entry,
    put_entry,
)

SYSTEM = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


def unique() -> str:
    return uuid.uuid4().hex[:12]


def observation(
    rid: str, value: float = 60, ident: str | None = None, when: str = "2025-03-01T10:00:00Z"
) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "identifier": [{"system": SYSTEM, "value": ident or f"ident-{rid}"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": "Patient/p-" + rid},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def version_of(resource: dict) -> str:
    return resource["meta"]["versionId"]


def test_capability_statement_says_fhir_r4(fhir_server):
    statement = fhir_server.client().capabilities()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"


def test_update_as_create_then_read_then_update_with_if_match(fhir_server):
    client = fhir_server.client()
    rid = f"obs-{unique()}"
    created = client.update(observation(rid, 60))
    assert created["id"] == rid
    first_version = version_of(created)

    assert client.read("Observation", rid)["valueQuantity"]["value"] == 60
    updated = client.update(observation(rid, 61), if_match=first_version)
    assert updated["valueQuantity"]["value"] == 61
    assert version_of(updated) != first_version
    assert client.read("Observation", rid)["valueQuantity"]["value"] == 61
    assert client.vread("Observation", rid, first_version)["valueQuantity"]["value"] == 60


def test_stale_etag_is_a_precondition_failure_and_changes_nothing(fhir_server):
    client = fhir_server.client()
    rid = f"obs-{unique()}"
    first = client.update(observation(rid, 60))
    client.update(observation(rid, 61), if_match=version_of(first))

    with pytest.raises(PreconditionFailed) as raised:
        client.update(observation(rid, 99), if_match=version_of(first))
    assert raised.value.status == 412
    assert f"PUT Observation/{rid}" in str(raised.value)
    assert client.read("Observation", rid)["valueQuantity"]["value"] == 61


def test_reading_an_unknown_id_gives_none(fhir_server):
    assert fhir_server.client().read("Observation", f"missing-{unique()}") is None


def test_search_by_identifier_finds_exactly_the_match(fhir_server):
    client = fhir_server.client()
    tag = unique()
    client.update(observation(f"a-{tag}", ident=f"a-{tag}"))
    client.update(observation(f"b-{tag}", ident=f"b-{tag}"))

    found = client.search("Observation", {"identifier": f"{SYSTEM}|a-{tag}"})
    assert [r["id"] for r in found] == [f"a-{tag}"]
    assert [r["id"] for r in client.find_by_identifier("Observation", SYSTEM, f"b-{tag}")] == [f"b-{tag}"]
    assert client.search("Observation", {"identifier": f"{SYSTEM}|none-{tag}"}) == []


def test_transaction_of_deterministic_puts_is_chunked_and_all_written(fhir_server):
    client = fhir_server.client(bundle_size=10)
    tag = unique()
    resources = [observation(f"tx-{tag}-{i}", value=i) for i in range(25)]

    results = client.transaction([put_entry(r) for r in resources])

    assert len(results) == 25 and all(r.ok for r in results)
    assert [r.resource_id for r in results] == [r["id"] for r in resources]
    assert all(r.version_id for r in results)
    stored = client.read_many("Observation", [r["id"] for r in resources], chunk_size=10)
    assert {rid: s["valueQuantity"]["value"] for rid, s in stored.items()} == {
        r["id"]: r["valueQuantity"]["value"] for r in resources
    }


def test_transaction_rewrites_urn_uuid_references(fhir_server):
    client = fhir_server.client()
    tag = unique()
    patient_entry = post_entry(
        {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": tag}]}
    )
    obs = observation(f"ref-{tag}")
    obs["subject"] = {"reference": patient_entry["fullUrl"]}

    patient_result, obs_result = client.transaction([patient_entry, put_entry(obs)])

    assert patient_result.created
    stored = client.read("Observation", obs["id"])
    assert stored["subject"]["reference"] == f"Patient/{patient_result.resource_id}"


def test_batch_reports_each_entry_on_its_own(fhir_server):
    client = fhir_server.client()
    tag = unique()
    good = observation(f"batch-{tag}")
    bad = observation(f"batch-bad-{tag}")
    bad["status"] = 42  # not a code

    good_result, bad_result = client.batch([put_entry(good), put_entry(bad)])

    assert good_result.ok
    assert bad_result.status == 400 and not bad_result.ok
    assert "status" in str(bad_result.outcome)
    assert client.read("Observation", good["id"]) is not None
    assert client.read("Observation", bad["id"]) is None


def test_conditional_create_creates_once(fhir_server):
    client = fhir_server.client()
    tag = unique()
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://accounts.google.com", "value": tag}],
    }
    query = identifier_query("https://accounts.google.com", tag)

    first, created_first = client.conditional_create(patient, query)
    second, created_second = client.conditional_create(patient, query)

    assert created_first and not created_second
    assert first["id"] == second["id"]
    assert len(client.search("Patient", {"identifier": f"https://accounts.google.com|{tag}"})) == 1


def test_conditional_update_by_identifier_creates_then_updates(fhir_server):
    client = fhir_server.client()
    tag = unique()
    body = observation("x", ident=f"cu-{tag}")
    del body["id"]
    query = identifier_query(SYSTEM, f"cu-{tag}")

    created = client.conditional_update(body, query)
    updated = client.conditional_update({**body, "valueQuantity": {"value": 70}}, query)

    assert updated["id"] == created["id"]
    assert client.read("Observation", created["id"])["valueQuantity"]["value"] == 70


def test_search_pages_follow_next_links(fhir_server):
    client = fhir_server.client()
    tag = unique()
    client.transaction([put_entry(observation(f"pg-{tag}-{i}", ident=f"pg-{tag}-{i}")) for i in range(7)])
    identifiers = ",".join(f"{SYSTEM}|pg-{tag}-{i}" for i in range(7))

    first_page = client.search_bundle("Observation", {"identifier": identifiers, "_count": "3"})
    everything = client.search("Observation", {"identifier": identifiers, "_count": "3"})

    assert len(first_page["entry"]) == 3
    assert any(link["relation"] == "next" for link in first_page["link"])
    assert sorted(r["id"] for r in everything) == sorted(f"pg-{tag}-{i}" for i in range(7))


def test_invalid_resource_is_rejected_with_the_failing_element(fhir_server):
    client = fhir_server.client()
    bad = observation(f"bad-{unique()}")
    bad["valueQuantity"]["value"] = "sixty"

    with pytest.raises(InvalidResource) as raised:
        client.update(bad)
    assert raised.value.status == 400
    assert "valueQuantity" in str(raised.value) or "value" in str(raised.value)
    assert client.read("Observation", bad["id"]) is None


def test_upsert_many_writes_changes_only(fhir_server):
    client: FhirClient = fhir_server.client()
    tag = unique()
    resources = [observation(f"up-{tag}-{i}", value=i) for i in range(6)]

    first = client.upsert_many(resources)
    again = client.upsert_many(resources)
    resources[2] = observation(f"up-{tag}-2", value=100)
    changed = client.upsert_many(resources)

    assert (first.written, first.unchanged) == (6, 0)
    assert (again.written, again.unchanged) == (0, 6)
    assert (changed.updated, changed.unchanged) == (1, 5)
    assert client.read("Observation", f"up-{tag}-2")["valueQuantity"]["value"] == 100


def test_identifier_values_with_commas_and_backslashes_are_escaped(fhir_server):
    client = fhir_server.client()
    tag = unique()
    tricky = f"a,b\\c-{tag}"
    client.update(observation(f"esc-{tag}", ident=tricky))
    client.update(observation(f"plain-{tag}", ident=f"a-{tag}"))

    assert [r["id"] for r in client.find_by_identifier("Observation", SYSTEM, tricky)] == [f"esc-{tag}"]
    stored, created = client.conditional_create(
        observation("ignored", ident=tricky), identifier_query(SYSTEM, tricky)
    )
    assert not created and stored["id"] == f"esc-{tag}"


def test_delete_then_read_gives_none_and_deleting_again_is_harmless(fhir_server):
    client = fhir_server.client()
    rid = f"del-{unique()}"
    client.update(observation(rid))
    client.delete("Observation", rid)
    assert client.read("Observation", rid) is None
    client.delete("Observation", rid)
