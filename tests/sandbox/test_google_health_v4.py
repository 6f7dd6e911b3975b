"""The sandbox speaks Google Health v4 as the discovery document describes it.

Responses are validated against the document's own ``schemas`` (a small validator: types, formats of
int64/int32/double/google-datetime/google-duration, enums, $ref, no unknown fields), and Google's
discovery-based client (``build_from_document`` with health.v4.json, rootUrl at the sandbox, google-auth
credentials refreshing at the sandbox's token endpoint) reads the same data our client reads.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from fitonfhir_dagster.googlehealth.health_catalog import DEFAULT_TYPE_NAMES, TYPES, scopes_for
from fitonfhir_dagster.googlehealth.health_client import GoogleHealthClient
from fitonfhir_dagster.googlehealth.health_wire import time_filter
from fitonfhir_dagster.settings import Settings
from fitonfhir_sandbox.handle import SandboxHandle

DAY = date(2025, 3, 2)
EMAIL = "discovery.client@example.com"


def discovery() -> dict[str, Any]:
    text = (
        resources.files("googleapiclient")
        .joinpath("discovery_cache/documents/health.v4.json")
        .read_text("utf-8")
    )
    return json.loads(text)


SCHEMAS = discovery()["schemas"]
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")


def violations(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What in ``value`` breaks the discovery ``schema``; empty when it conforms."""
    if "$ref" in schema:
        return violations(value, SCHEMAS[schema["$ref"]], where)
    kind, fmt = schema.get("type"), schema.get("format")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        props = schema.get("properties", {})
        out = [f"{where}.{k}: not in the schema {schema.get('id', '')}" for k in value if k not in props]
        for key, item in value.items():
            if key in props:
                out += violations(item, props[key], f"{where}.{key}")
        if "additionalProperties" in schema:
            for key, item in value.items():
                out += violations(item, schema["additionalProperties"], f"{where}.{key}")
        return out
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array"]
        return [v for i, item in enumerate(value) for v in violations(item, schema["items"], f"{where}[{i}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} is not one of the enum"]
        if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
            return [f"{where}: {value!r} is not an int64 string"]
        if fmt == "google-datetime":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                return [f"{where}: {value!r} is not an RFC 3339 timestamp"]
        if fmt == "google-duration" and not _DURATION.match(value):
            return [f"{where}: {value!r} is not a duration"]
        return []
    if kind == "integer":
        return (
            []
            if isinstance(value, int) and not isinstance(value, bool)
            else [f"{where}: expected an integer"]
        )
    if kind == "number":
        return (
            []
            if isinstance(value, int | float) and not isinstance(value, bool)
            else [f"{where}: expected a number"]
        )
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean"]
    return []


@pytest.fixture
def service(sandbox: SandboxHandle):
    tokens = sandbox.onboard(EMAIL, scopes=scopes_for())
    credentials = Credentials(
        token=None,
        refresh_token=tokens["refresh_token"],
        token_uri=sandbox.token_url,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
    )
    document = {**discovery(), "rootUrl": sandbox.url + "/"}
    api = build_from_document(document, credentials=credentials)
    yield api
    api.close()


def _all_pages(request_for, health_type, view: str) -> list[dict[str, Any]]:
    pages, token = [], None
    while True:
        page = request_for(health_type, view, token).execute()
        pages.append(page)
        token = page.get("nextPageToken")
        if not token:
            return pages


def _requester(service):
    points = service.users().dataTypes().dataPoints()

    def request(health_type, view: str, token: str | None):
        method = points.list if view == "list" else points.reconcile
        return method(
            parent=f"users/me/dataTypes/{health_type.name}",
            filter=time_filter(health_type, DAY, DAY + timedelta(days=8)),
            pageSize=50,
            pageToken=token,
        )

    return request


def test_googles_discovery_client_reads_the_identity(service):
    identity = service.users().getIdentity(name="users/me/identity").execute()
    assert violations(identity, {"$ref": "Identity"}) == []
    assert identity["healthUserId"].isdigit()


@pytest.mark.parametrize("type_name", [*DEFAULT_TYPE_NAMES, "daily-oxygen-saturation"])
def test_every_list_and_reconcile_page_conforms_to_the_discovery_schemas(service, type_name):
    health_type = TYPES[type_name]
    request = _requester(service)
    for view, schema in (("list", "ListDataPointsResponse"), ("reconcile", "ReconcileDataPointsResponse")):
        pages = _all_pages(request, health_type, view)
        points = [p for page in pages for p in page.get("dataPoints", [])]
        assert points, f"{type_name} {view}: the sandbox served no points for eight days"
        for page in pages:
            assert violations(page, {"$ref": schema}) == []
        assert all(set(p) <= {"dataSource", health_type.member} for p in points)


def test_the_discovery_client_and_ours_read_the_same_points(service, sandbox, tmp_path):
    settings = Settings.from_env(sandbox.env() | {"FITONFHIR_HOME": str(tmp_path)})
    heart_rate = TYPES["heart-rate"]
    theirs = [p for page in _all_pages(_requester(service), heart_rate, "list") for p in page["dataPoints"]]
    ours_client = GoogleHealthClient(settings, sandbox.onboard(EMAIL, scopes=scopes_for())["refresh_token"])
    with ours_client:
        ours = [
            p
            for page in ours_client.data_point_pages(heart_rate, DAY, DAY + timedelta(days=8))
            for p in page.points
        ]
    assert len(ours) == len(theirs) > 100
    assert [int(p["heartRate"]["beatsPerMinute"]) for p in theirs] == [
        p["heartRate"]["beatsPerMinute"] for p in ours
    ]


def test_errors_come_in_googles_format_with_an_error_info_reason(service, sandbox):
    sandbox.add_fault(path="/v4/users/me/dataTypes/steps/dataPoints", status=429, count=10)
    with pytest.raises(HttpError) as caught:
        _requester(service)(TYPES["steps"], "list", None).execute(num_retries=0)
    sandbox.clear_faults()
    body = json.loads(caught.value.content)
    assert caught.value.resp.status == 429
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"

    bad = (
        service.users()
        .dataTypes()
        .dataPoints()
        .list(
            parent="users/me/dataTypes/weight", filter='weight.interval.start_time >= "2025-03-02T00:00:00Z"'
        )
    )
    with pytest.raises(HttpError) as refused:
        bad.execute()
    error = json.loads(refused.value.content)["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "INVALID_DATA_POINT_FILTER_FIELD"


def test_a_page_size_above_the_maximum_is_truncated_and_a_foreign_page_token_refused(service):
    points = service.users().dataTypes().dataPoints()
    steps = TYPES["steps"]
    whole = points.list(
        parent="users/me/dataTypes/steps",
        filter=time_filter(steps, DAY, DAY + timedelta(days=1)),
        pageSize=50000,
    ).execute()
    assert "nextPageToken" not in whole and whole["dataPoints"]
    with pytest.raises(HttpError) as refused:
        points.list(parent="users/me/dataTypes/steps", pageToken="bm90LWEtdG9rZW4").execute()
    assert json.loads(refused.value.content)["error"]["details"][0]["reason"] == "INVALID_PAGE_TOKEN"
