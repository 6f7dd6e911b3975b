"""The sandbox FHIR database's layout: superseded versions in history, index rows that follow each version,
and a database of the first layout (made by an earlier version of the sandbox) opened without loss."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from fitonfhir_sandbox.fhir_server import create_fhir_app
from fitonfhir_sandbox.fhir_store import SCHEMA_VERSION, FhirStore

from .test_sandbox_fhir_server import obs


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    return TestClient(create_fhir_app(tmp_path / "fhir.db"))


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_every_version_reads_back_across_a_delete_and_a_new_create(http):
    http.put("/Observation/o1", json=obs("o1", 60))
    http.put("/Observation/o1", json=obs("o1", 61))
    assert http.delete("/Observation/o1").status_code in (200, 204)
    recreated = http.put("/Observation/o1", json=obs("o1", 62))
    assert recreated.headers["etag"] == 'W/"4"'
    assert [http.get(f"/Observation/o1/_history/{v}").status_code for v in (1, 2, 3, 4)] == [
        200,
        200,
        410,
        200,
    ]
    assert http.get("/Observation/o1/_history/2").json()["valueQuantity"]["value"] == 61
    history = http.get("/Observation/o1/_history").json()["entry"]
    assert [e["resource"]["meta"]["versionId"] for e in history] == ["4", "2", "1"]


def test_a_search_finds_a_resource_by_its_current_version_only(http):
    http.put("/Observation/o1", json=obs("o1", when="2025-03-01T10:00:00Z"))
    http.put("/Observation/o2", json=obs("o2", when="2025-03-02T10:00:00Z"))
    moved = obs("o1", when="2025-04-01T10:00:00Z", identifier=[{"system": "urn:sys", "value": "renamed"}])
    http.put("/Observation/o1", json=moved)
    assert _ids(http.get("/Observation", params={"identifier": "urn:sys|v-o1"}).json()) == []
    assert _ids(http.get("/Observation", params={"identifier": "urn:sys|renamed"}).json()) == ["o1"]
    assert _ids(http.get("/Observation", params={"date": "2025-03"}).json()) == ["o2"]
    by_date = http.get("/Observation", params={"patient": "Patient/p1", "_sort": "-date"}).json()
    assert _ids(by_date) == ["o1", "o2"]
    http.delete("/Observation/o1")
    assert _ids(http.get("/Observation", params={"identifier": "urn:sys|renamed"}).json()) == []
    assert (
        http.get("/Observation", params={"code": "http://loinc.org|8867-4", "_summary": "count"}).json()[
            "total"
        ]
        == 1
    )


def test_three_versions_of_one_resource_in_one_batch_leave_the_last_ones_index(http):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": obs("o1", identifier=[{"system": "urn:sys", "value": v}]),
                "request": {"method": "PUT", "url": "Observation/o1"},
            }
            for v in ("first", "second", "third")
        ],
    }
    response = http.post("/", json=bundle)
    assert [e["response"]["etag"] for e in response.json()["entry"]] == ['W/"1"', 'W/"2"', 'W/"3"']
    found = {
        v: _ids(http.get("/Observation", params={"identifier": f"urn:sys|{v}"}).json())
        for v in ("first", "second", "third")
    }
    assert found == {"first": [], "second": [], "third": ["o1"]}


_FIRST_LAYOUT = """
CREATE TABLE resources (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, json BLOB, PRIMARY KEY (type, id));
CREATE INDEX resources_updated ON resources (type, last_updated);
CREATE TABLE history (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, json BLOB, PRIMARY KEY (type, id, version));
CREATE TABLE tokens (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, system TEXT, value TEXT NOT NULL);
CREATE INDEX tokens_lookup ON tokens (type, param, value);
CREATE INDEX tokens_owner ON tokens (type, id);
CREATE TABLE dates (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, start REAL NOT NULL, end_ REAL NOT NULL);
CREATE INDEX dates_lookup ON dates (type, param, start);
CREATE INDEX dates_owner ON dates (type, id);
"""


def _first_layout_database(path: Path) -> None:
    """What the sandbox of the previous release left: o1 in two versions, o2 deleted, each version in history."""
    conn = sqlite3.connect(path)
    conn.executescript(_FIRST_LAYOUT)
    v1 = {**obs("o1", 60), "meta": {"versionId": "1", "lastUpdated": "2025-03-01T10:00:00.000Z"}}
    v2 = {**obs("o1", 61), "meta": {"versionId": "2", "lastUpdated": "2025-03-01T11:00:00.000Z"}}
    o2 = {**obs("o2"), "meta": {"versionId": "1", "lastUpdated": "2025-03-01T10:00:00.000Z"}}
    conn.execute(
        "INSERT INTO resources VALUES ('Observation','o1',2,'2025-03-01T11:00:00.000Z',0,?)",
        (orjson.dumps(v2),),
    )
    conn.execute("INSERT INTO resources VALUES ('Observation','o2',2,'2025-03-01T12:00:00.000Z',1,NULL)")
    conn.executemany(
        "INSERT INTO history VALUES (?,?,?,?,?,?)",
        [
            ("Observation", "o1", 1, "2025-03-01T10:00:00.000Z", 0, orjson.dumps(v1)),
            ("Observation", "o1", 2, "2025-03-01T11:00:00.000Z", 0, orjson.dumps(v2)),
            ("Observation", "o2", 1, "2025-03-01T10:00:00.000Z", 0, orjson.dumps(o2)),
            ("Observation", "o2", 2, "2025-03-01T12:00:00.000Z", 1, None),
        ],
    )
    conn.executemany(
        "INSERT INTO tokens VALUES ('Observation','o1',?,?,?)",
        [
            ("identifier", "urn:sys", "v-o1"),
            ("code", "http://loinc.org", "8867-4"),
            ("subject", "Patient", "p1"),
            ("patient", "Patient", "p1"),
        ],
    )
    start = 1740823200.0  # 2025-03-01T10:00:00Z
    conn.execute("INSERT INTO dates VALUES ('Observation','o1','date',?,?)", (start, start + 1))
    conn.commit()
    conn.close()


def test_a_database_of_the_first_layout_opens_with_every_version_and_search(tmp_path):
    path = tmp_path / "fhir.db"
    _first_layout_database(path)
    http = TestClient(create_fhir_app(path))
    assert http.get("/Observation/o1").json()["valueQuantity"]["value"] == 61
    assert http.get("/Observation/o1/_history/1").json()["valueQuantity"]["value"] == 60
    assert [
        e["resource"]["meta"]["versionId"] for e in http.get("/Observation/o1/_history").json()["entry"]
    ] == [
        "2",
        "1",
    ]
    assert http.get("/Observation/o2").status_code == 410
    assert http.get("/Observation/o2/_history/1").status_code == 200
    assert _ids(http.get("/Observation", params={"identifier": "urn:sys|v-o1"}).json()) == ["o1"]
    assert _ids(http.get("/Observation", params={"date": "2025-03-01", "patient": "p1"}).json()) == ["o1"]
    # and it goes on as a database of this layout
    assert http.put("/Observation/o1", json=obs("o1", 63)).headers["etag"] == 'W/"3"'
    assert http.put("/Observation/o3", json=obs("o3")).status_code == 201
    assert _ids(http.get("/Observation", params={"patient": "p1", "_sort": "_id"}).json()) == ["o1", "o3"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM history WHERE id = 'o1'").fetchone()[0] == 2  # versions 1 and 2
    # opened again, it is not converted twice
    assert FhirStore(path).read("Observation", "o1")["meta"]["versionId"] == "3"


def test_a_database_of_a_newer_layout_is_refused_with_its_path(tmp_path):
    path = tmp_path / "fhir.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match=rf"{path}.*newer"):
        FhirStore(path)


def test_a_conversion_that_fails_leaves_the_first_layout_as_it_was(tmp_path):
    path = tmp_path / "fhir.db"
    _first_layout_database(path)
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE dates; CREATE TABLE dates (type TEXT, id TEXT);"
    )  # damaged: no date columns
    conn.close()
    with pytest.raises(sqlite3.OperationalError):
        FhirStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 4  # untouched, nothing half-converted
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "resources",
        "history",
        "tokens",
        "dates",
    }
