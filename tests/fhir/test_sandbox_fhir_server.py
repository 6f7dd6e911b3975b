"""The sandbox FHIR server's own contract: versions, no-op writes, search, transactions, errors, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from fitonfhir_dagster.fhir import FhirClient
from fitonfhir_sandbox.fhir_server import create_fhir_app


def obs(rid: str, value: float = 60, when: str = "2025-03-01T10:00:00Z", **extra) -> dict:
    body = {
        "resourceType": "Observation",
        "id": rid,
        "identifier": [{"system": "urn:sys", "value": f"v-{rid}"}],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value},
    }
    body.update(extra)
    return body


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    return TestClient(create_fhir_app(tmp_path / "fhir.db"))


def issues(response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return " ".join(i.get("diagnostics", "") for i in body["issue"])


# ---------------------------------------------------------------- versions and no-op writes


def test_put_creates_with_version_1_and_headers(http):
    response = http.put("/Observation/o1", json=obs("o1"))
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith("/Observation/o1/_history/1")
    assert "GMT" in response.headers["last-modified"]
    assert response.json()["meta"]["versionId"] == "1"
    assert response.json()["meta"]["lastUpdated"].endswith("Z")


def test_identical_put_is_a_no_op_and_keeps_the_version(http):
    http.put("/Observation/o1", json=obs("o1"))
    stale_meta = {**obs("o1"), "meta": {"versionId": "77", "lastUpdated": "2000-01-01T00:00:00Z"}}
    again = http.put("/Observation/o1", json=stale_meta)
    assert again.status_code == 200 and again.headers["etag"] == 'W/"1"'
    assert len(http.get("/Observation/o1/_history").json()["entry"]) == 1


def test_changed_put_makes_a_new_version_and_keeps_history(http):
    http.put("/Observation/o1", json=obs("o1", 60))
    changed = http.put("/Observation/o1", json=obs("o1", 61), headers={"If-Match": 'W/"1"'})
    assert changed.status_code == 200 and changed.headers["etag"] == 'W/"2"'
    assert http.get("/Observation/o1/_history/1").json()["valueQuantity"]["value"] == 60
    assert [
        e["resource"]["meta"]["versionId"] for e in http.get("/Observation/o1/_history").json()["entry"]
    ] == ["2", "1"]


def test_if_match_with_a_stale_version_is_412_naming_the_current_one(http):
    http.put("/Observation/o1", json=obs("o1", 60))
    http.put("/Observation/o1", json=obs("o1", 61))
    stale = http.put("/Observation/o1", json=obs("o1", 62), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert 'W/"2"' in issues(stale)


def test_post_assigns_a_server_id_ignoring_the_body_id(http):
    created = http.post("/Observation", json=obs("mine"))
    assert created.status_code == 201
    assert created.json()["id"] != "mine" and len(created.json()["id"]) == 36


def test_if_none_exist_returns_the_existing_match(http):
    first = http.post("/Observation", json=obs("a"), headers={"If-None-Exist": "identifier=urn:sys|v-a"})
    second = http.post("/Observation", json=obs("a"), headers={"If-None-Exist": "identifier=urn:sys|v-a"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_if_none_exist_with_several_matches_is_412(http):
    http.put("/Observation/a", json=obs("a", identifier=[{"system": "urn:sys", "value": "same"}]))
    http.put("/Observation/b", json=obs("b", identifier=[{"system": "urn:sys", "value": "same"}]))
    response = http.post("/Observation", json=obs("c"), headers={"If-None-Exist": "identifier=urn:sys|same"})
    assert response.status_code == 412 and "matched 2" in issues(response)


def test_conditional_update_by_identifier(http):
    body = obs("ignored")
    del body["id"]
    created = http.put("/Observation?identifier=urn:sys|v-ignored", json=body)
    updated = http.put(
        "/Observation?identifier=urn:sys|v-ignored", json={**body, "valueQuantity": {"value": 1}}
    )
    assert (created.status_code, updated.status_code) == (201, 200)
    assert created.json()["id"] == updated.json()["id"]
    assert updated.headers["etag"] == 'W/"2"'


def test_delete_then_read_is_410_and_delete_is_idempotent(http):
    http.put("/Observation/o1", json=obs("o1"))
    assert http.delete("/Observation/o1").status_code == 204
    assert http.delete("/Observation/o1").status_code == 204
    assert http.get("/Observation/o1").status_code == 410
    assert http.get("/Observation", params={"_id": "o1"}).json()["total"] == 0
    assert http.put("/Observation/o1", json=obs("o1")).headers["etag"] == 'W/"3"'


def test_update_create_off_refuses_client_ids_with_405(tmp_path):
    http = TestClient(create_fhir_app(tmp_path / "fhir.db", update_create=False))
    response = http.put("/Observation/o1", json=obs("o1"))
    assert response.status_code == 405 and "client-assigned ids" in issues(response)
    resources = http.get("/metadata").json()["rest"][0]["resource"]
    assert {r["updateCreate"] for r in resources} == {False}


# ---------------------------------------------------------------- search


@pytest.fixture
def populated(http):
    http.put("/Observation/early", json=obs("early", when="2025-03-01T08:00:00Z"))
    http.put(
        "/Observation/noon",
        json=obs("noon", when="2025-03-01T12:00:00Z", subject={"reference": "Patient/p2"}),
    )
    period = {"start": "2025-03-02T00:00:00Z", "end": "2025-03-02T00:59:59Z"}
    hourly = obs(
        "hourly", code={"coding": [{"system": "urn:other", "code": "steps"}]}, effectivePeriod=period
    )
    del hourly["effectiveDateTime"]
    http.put("/Observation/hourly", json=hourly)
    return http


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2025-03-01", ["early", "noon"]),
        ("eq2025-03-02", ["hourly"]),
        ("ge2025-03-01T12:00:00Z", ["hourly", "noon"]),
        ("gt2025-03-01T12:00:00Z", ["hourly"]),
        ("le2025-03-01T08:00:00Z", ["early"]),
        ("lt2025-03-01T08:00:00Z", []),
        ("2025-03-02T00:30:00Z", []),
        ("ge2025-03-02T00:30:00Z", ["hourly"]),
        ("2025-03", ["early", "hourly", "noon"]),
    ],
)
def test_date_search_prefixes_cover_datetimes_and_periods(populated, date, expected):
    assert sorted(ids(populated.get("/Observation", params={"date": date}))) == expected


def test_token_and_reference_searches(populated):
    assert ids(populated.get("/Observation", params={"code": "urn:other|steps"})) == ["hourly"]
    assert sorted(ids(populated.get("/Observation", params={"code": "8867-4"}))) == ["early", "noon"]
    assert ids(populated.get("/Observation", params={"code": "|8867-4"})) == []
    assert ids(populated.get("/Observation", params={"subject": "Patient/p2"})) == ["noon"]
    assert ids(populated.get("/Observation", params={"patient": "p2"})) == ["noon"]
    assert ids(populated.get("/Observation", params={"identifier": "v-early"})) == ["early"]
    assert sorted(ids(populated.get("/Observation", params={"_id": "early,noon"}))) == ["early", "noon"]
    both = [("identifier", "urn:sys|v-early,urn:sys|v-noon"), ("subject", "Patient/p1")]
    assert ids(populated.get("/Observation", params=both)) == ["early"]


def test_sort_total_and_summary_count(populated):
    assert ids(populated.get("/Observation", params={"_sort": "-date"})) == ["hourly", "noon", "early"]
    assert ids(populated.get("/Observation", params={"_sort": "date"})) == ["early", "noon", "hourly"]
    assert ids(populated.get("/Observation", params={"_sort": "-_lastUpdated"}))[0] == "hourly"
    counted = populated.get("/Observation", params={"_summary": "count"}).json()
    assert counted["total"] == 3 and counted["entry"] == []
    assert "total" not in populated.get("/Observation", params={"_total": "none"}).json()


def test_paging_links_carry_the_query(populated):
    page = populated.get("/Observation", params={"_count": "2", "_sort": "date"}).json()
    assert [e["resource"]["id"] for e in page["entry"]] == ["early", "noon"]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = populated.get(next_url).json()
    assert [e["resource"]["id"] for e in second["entry"]] == ["hourly"]
    assert not any(link["relation"] == "next" for link in second["link"])


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"colour": "red"}, "'colour'"),
        ({"date": "yesterday"}, "Invalid date"),
        ({"_count": "-1"}, "_count"),
        ({"_sort": "colour"}, "Cannot sort by 'colour'"),
        ({"identifier:exact": "x"}, "modifiers"),
        ({"_total": "maybe"}, "_total"),
    ],
)
def test_bad_search_parameters_are_400_naming_the_parameter(http, params, needle):
    response = http.get("/Observation", params=params)
    assert response.status_code == 400
    assert needle in issues(response)


# ---------------------------------------------------------------- transactions and batches


def put(resource: dict) -> dict:
    return {
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }


def test_transaction_is_all_or_nothing_and_names_the_failing_entry(http):
    bad = obs("t2", effectiveDateTime="yesterday")
    response = http.post(
        "/", json={"resourceType": "Bundle", "type": "transaction", "entry": [put(obs("t1")), put(bad)]}
    )
    assert response.status_code == 400
    assert "Bundle.entry[1]" in issues(response) and "effectiveDateTime" in issues(response)
    assert http.get("/Observation/t1").status_code == 404


def test_transaction_stale_if_match_rolls_back_with_412(http):
    http.put("/Observation/t1", json=obs("t1", 1))
    http.put("/Observation/t1", json=obs("t1", 2))
    stale = put(obs("t1", 3))
    stale["request"]["ifMatch"] = 'W/"1"'
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [put(obs("t2")), stale]}
    response = http.post("/", json=bundle)
    assert response.status_code == 412
    assert http.get("/Observation/t2").status_code == 404


def test_transaction_response_has_status_location_and_etag_in_order(http):
    http.put("/Observation/t1", json=obs("t1"))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [put(obs("t1")), put(obs("t2"))]}
    entries = http.post("/", json=bundle).json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "201 Created"]
    assert entries[1]["response"]["location"] == "Observation/t2/_history/1"
    assert entries[0]["response"]["etag"] == 'W/"1"'  # unchanged content: no new version


def test_prefer_return_minimal_leaves_resources_out(http):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [put(obs("m1"))]}
    entry = http.post("/", json=bundle, headers={"Prefer": "return=minimal"}).json()["entry"][0]
    assert "resource" not in entry and entry["response"]["etag"] == 'W/"1"'


def test_transaction_writing_one_id_twice_is_refused(http):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [put(obs("d")), put(obs("d", 2))]}
    response = http.post("/", json=bundle)
    assert response.status_code == 400 and "written twice" in issues(response)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"resource": obs("x")}, "request is missing"),
        ({"request": {"method": "PATCH", "url": "Observation/x"}}, "request.method"),
        ({"request": {"method": "GET", "url": "https://elsewhere/Observation/x"}}, "relative URL"),
        ({"request": {"method": "GET", "url": "Nope/x"}}, "Unknown resource type"),
    ],
)
def test_malformed_bundle_entries_are_named(http, entry, needle):
    response = http.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert response.status_code in (400, 404)
    assert "Bundle.entry[0]" in issues(response) and needle in issues(response)


def test_batch_entries_fail_independently(http):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            put(obs("ok")),
            put(obs("bad", status=3)),
            {"request": {"method": "GET", "url": "Observation/ok"}},
        ],
    }
    entries = http.post("/", json=bundle).json()["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "400", "200 OK"]
    assert "Observation.status" in str(entries[1]["response"]["outcome"])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "needle"),
    [
        ("GET", "/Nope/1", None, 404, "Unknown resource type 'Nope'"),
        ("GET", "/Observation/absent", None, 404, "Observation/absent not found"),
        ("GET", "/Observation/bad$id", None, 400, "Invalid resource id"),
        ("PATCH", "/Observation/o1", None, 405, "not allowed"),
        ("GET", "/a/b/c/d/e/f", None, 404, "Unknown path"),
        ("PUT", "/Observation/o1", b"{not json", 400, "not valid JSON"),
        ("PUT", "/Observation/o1", b"", 400, "empty"),
        ("PUT", "/Observation/o1", {"resourceType": "Patient", "id": "o1"}, 400, "does not match"),
        ("PUT", "/Observation/o1", obs("o2"), 400, "does not match the URL id"),
        ("PUT", "/Observation/o1", {**obs("o1"), "colour": "red"}, 400, "Observation.colour"),
        ("PUT", "/Observation/o1", {**obs("o1"), "status": None, "code": None}, 400, "Observation.status"),
        ("POST", "/", {"resourceType": "Bundle", "type": "collection"}, 400, "transaction or batch"),
        ("POST", "/", obs("o1"), 400, "needs a Bundle"),
        ("PUT", "/Observation", obs("o1"), 400, "PUT needs"),
    ],
)
def test_errors_are_operation_outcomes(http, method, path, body, status, needle):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = http.request(method, path, **kwargs)
    assert response.status_code == status
    assert needle in issues(response)


def test_metadata_is_a_valid_r4_capability_statement(http):
    statement = http.get("/metadata").json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    assert observation["updateCreate"] is True and observation["conditionalCreate"] is True


# ---------------------------------------------------------------- persistence and mounting


def test_data_survives_a_restart(tmp_path):
    TestClient(create_fhir_app(tmp_path / "fhir.db")).put("/Observation/o1", json=obs("o1"))
    again = TestClient(create_fhir_app(tmp_path / "fhir.db"))
    assert again.get("/Observation/o1").headers["etag"] == 'W/"1"'
    assert ids(again.get("/Observation", params={"identifier": "urn:sys|v-o1"})) == ["o1"]


def test_mounted_at_fhir_over_real_http_links_keep_the_prefix(tmp_path, serve_app):
    root = Starlette(routes=[Mount("/fhir", app=create_fhir_app(tmp_path / "fhir.db"))])
    with serve_app(root) as url:
        client = FhirClient(f"{url}/fhir")
        client.transaction([put(obs(f"m{i}")) for i in range(5)])
        page = client.search_bundle("Observation", {"_count": "2"})
        assert all(link["url"].startswith(f"{url}/fhir/Observation?") for link in page["link"])
        assert len(client.search("Observation", {"_count": "2"})) == 5
        assert client.read("Observation", "m3")["id"] == "m3"
