"""Servers that refuse client-assigned ids: the client writes by conditional create on the identifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from fitonfhir_dagster.fhir import FhirClient, InvalidResource
from fitonfhir_dagster.fhir.fhir_client import WRITE_MODE_CONDITIONAL_CREATE, WRITE_MODE_PUT
from fitonfhir_sandbox.fhir_server import create_fhir_app

SYSTEM = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


def obs(rid: str, value: float = 60) -> dict:
    return {
        "resourceType": "Observation",
        "id": rid,
        "identifier": [{"system": SYSTEM, "value": f"value-{rid}"}],
        "status": "final",
        "code": {"text": "heart rate"},
        "valueQuantity": {"value": value},
    }


def without_metadata(app):
    """ASGI wrapper hiding /metadata, so the client only learns about refused ids from a 405."""

    async def wrapper(scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/metadata"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    return wrapper


def test_capability_statement_with_update_create_false_selects_conditional_create(tmp_path: Path, serve_app):
    with serve_app(create_fhir_app(tmp_path / "fhir.db", update_create=False)) as url:
        client = FhirClient(url)
        stored = client.upsert(obs("det-1"))
        assert client.write_mode == WRITE_MODE_CONDITIONAL_CREATE
        assert stored["id"] != "det-1"  # the server chose the id
        again = client.upsert(obs("det-1"))
        changed = client.upsert(obs("det-1", 61))
        found = client.find_by_identifier("Observation", SYSTEM, "value-det-1")
    assert again["id"] == stored["id"] == changed["id"]
    assert again["meta"]["versionId"] == "1" and changed["meta"]["versionId"] == "2"
    assert [r["valueQuantity"]["value"] for r in found] == [61]


def test_a_405_on_put_switches_to_conditional_create_and_is_remembered(tmp_path: Path, serve_app):
    with serve_app(without_metadata(create_fhir_app(tmp_path / "fhir.db", update_create=False))) as url:
        client = FhirClient(url)
        client.upsert(obs("a"))
        assert client.write_mode == WRITE_MODE_CONDITIONAL_CREATE
        summary = client.upsert_many([obs("a"), obs("b"), obs("c")])
        assert (summary.created, summary.unchanged, summary.updated) == (2, 1, 0)
        assert len(client.search("Observation", {"identifier": f"{SYSTEM}|"})) == 3


def test_a_server_accepting_client_ids_keeps_put(tmp_path: Path, serve_app):
    with serve_app(create_fhir_app(tmp_path / "fhir.db")) as url:
        client = FhirClient(url)
        assert client.upsert(obs("a"))["id"] == "a"
        assert client.write_mode == WRITE_MODE_PUT


def test_conditional_create_needs_an_identifier(tmp_path: Path, serve_app):
    with serve_app(create_fhir_app(tmp_path / "fhir.db", update_create=False)) as url:
        client = FhirClient(url)
        with pytest.raises(ValueError, match="Observation/x has no identifier"):
            client.upsert({**obs("x"), "identifier": []})


def test_invalid_content_is_not_mistaken_for_refused_ids(tmp_path: Path, serve_app):
    with serve_app(create_fhir_app(tmp_path / "fhir.db")) as url:
        client = FhirClient(url)
        with pytest.raises(InvalidResource, match="Observation.status"):
            client.upsert({**obs("x"), "status": 1})
        assert client.write_mode == WRITE_MODE_PUT
