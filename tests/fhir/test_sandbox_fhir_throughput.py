"""The sandbox FHIR server's fast paths keep its contract: memoised validation, buffered transactions,
batch reads by id; and the client's batch read."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fitonfhir_sandbox import fhir_validation
from fitonfhir_sandbox.fhir_server import create_fhir_app

from .test_sandbox_fhir_server import issues, obs


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    return TestClient(create_fhir_app(tmp_path / "fhir.db"))


def _transaction(*resources):
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"Observation/{r['id']}"}} for r in resources
        ],
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"effectiveDateTime": "2025-02-30T10:00:00Z"},  # matches the dateTime pattern, is no date
        {"effectiveDateTime": "yesterday"},
        {"valueQuantity": {"value": "sixty"}},
        {"status": ""},
        {"valueQuantity": {"value": float("inf")}},
    ],
)
def test_a_resource_shaped_like_a_valid_one_is_still_validated(http, bad):
    assert http.put("/Observation/ok1", json=obs("ok1")).status_code == 201  # this shape is now known
    assert http.put("/Observation/ok2", json=obs("ok2", 61, "2025-03-02T11:00:00Z")).status_code == 201
    body = obs("bad1")
    body.update(bad)
    try:
        response = http.put("/Observation/bad1", json=body)
    except ValueError:  # inf is not JSON: the client refuses to send it
        return
    assert response.status_code == 400, response.text
    assert "Observation" in issues(response)


_CORPUS = [
    "",
    "0",
    "00",
    "007",
    "-0",
    "+12",
    "-12",
    "12a",
    "a12",
    "0\n",
    "12\n",
    "1\n2",
    " 1",
    "1 ",
    "x 0",
    "\u00a0",
    "2026-12-01T05:30:24.0810000Z",
    "feb4517fa17f8df3cd39a8fcf9e6889f22ce9ab866dbd9361fe54fbb49a46462",
    "bench-0.fbdd83fa.derived:com.google.blood_glucose:com.google.android.gms:merged.20261201053024Z",
    "urn:uuid:0b6a2b8e-7b0c-4c4b-9a9e-3f1e2d9c8b7a",
    "https://loinc.org|15074-8",
    *(chr(c) for c in range(0, 0x3000, 7)),
    *(f"{a}{b}" for a in "0 9-+a\n" for b in "0 9-+a\n"),
    *(f"{a}{b}{c}" for a in "01-a\n" for b in "019+\n" for c in "0 5\n"),
    "x00",
    "x100",
    "x10\n",
    "00\n\n",
    "1\n\n",
    "\u0663",
    "7\u0663",
    "\u06630",
    "abcd",
    "abc",
    "ab=d",
    "abcd\n",
    " abcd",
    "ab cd",
    "abcd efgh ",
    "abcdabcd",
    "a+b/",
    "abcd\u00a0",
]


def test_the_faster_pattern_forms_answer_as_the_patterns_do():
    # what the validation skeleton asks of every unique string: fullmatch and search, for each pattern
    for pattern, fullmatch in zip(fhir_validation._PATTERNS, fhir_validation._FULLMATCHES, strict=True):
        for value in _CORPUS:
            assert bool(fullmatch(value)) == bool(pattern.fullmatch(value)), (pattern.pattern, value)
    for pattern, search in zip(fhir_validation._SEARCHED, fhir_validation._SEARCHES, strict=True):
        for value in _CORPUS:
            assert bool(search(value)) == bool(pattern.search(value)), (pattern.pattern, value)


def test_a_transaction_of_many_puts_then_reads_sees_its_own_writes(http):
    resources = [obs(f"t{i}", 60 + i) for i in range(300)]
    response = http.post("/", json=_transaction(*resources))
    assert response.status_code == 200
    statuses = {e["response"]["status"] for e in response.json()["entry"]}
    assert statuses == {"201 Created"}
    # searches and reads see every row, index included
    found = http.get("/Observation", params={"identifier": "urn:sys|v-t299"}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["t299"]
    assert http.get("/Observation", params={"_summary": "count"}).json()["total"] == 300
    # the same Bundle again changes nothing; one changed resource gets version 2
    again = http.post("/", json=_transaction(*resources[:-1], obs("t299", 1)))
    versions = [e["response"]["etag"] for e in again.json()["entry"]]
    assert versions == ['W/"1"'] * 299 + ['W/"2"']


def test_a_failing_transaction_leaves_nothing_behind(http):
    bad = obs("t2")
    bad["status"] = 5
    response = http.post("/", json=_transaction(obs("t1"), bad))
    assert response.status_code == 400 and "Bundle.entry[1]" in issues(response)
    assert http.get("/Observation/t1").status_code == 404
    assert http.get("/Observation", params={"_summary": "count"}).json()["total"] == 0


def test_a_batch_of_reads_by_id_answers_each_id_in_order(http):
    http.post("/", json=_transaction(obs("r1"), obs("r2")))
    http.delete("/Observation/r2")
    entries = [
        {"request": {"method": "GET", "url": f"Observation/{rid}"}} for rid in ("r2", "r1", "nope", "r1")
    ]
    response = http.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    answers = response.json()["entry"]
    assert [a["response"]["status"][:3] for a in answers] == ["410", "200", "404", "200"]
    assert answers[1]["resource"]["id"] == "r1" and answers[1]["response"]["etag"] == 'W/"1"'
    assert answers[2]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_the_client_reads_a_chunk_with_one_batch_request(tmp_path, serve_app):
    from fitonfhir_dagster.fhir.fhir_client import FhirClient

    with serve_app(create_fhir_app(tmp_path / "fhir.db")) as url:
        fhir = FhirClient(url, bundle_size=500)
        fhir.transaction(
            [
                {"resource": o, "request": {"method": "PUT", "url": f"Observation/{o['id']}"}}
                for o in (obs(f"c{i}") for i in range(450))
            ]
        )
        sent = []
        original = fhir.session.request

        def counting(method, url, **kwargs):
            sent.append(method)
            return original(method, url, **kwargs)

        fhir.session.request = counting  # type: ignore[method-assign]
        found = fhir.read_batch("Observation", [f"c{i}" for i in range(460)])
        assert sorted(found) == sorted(f"c{i}" for i in range(450))
        assert sent == ["POST"]
