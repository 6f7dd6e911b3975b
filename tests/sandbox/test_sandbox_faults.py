"""Fault injection, from test helpers and from the loopback-only HTTP control API."""

from __future__ import annotations

import time
from datetime import date
from urllib.parse import quote

import orjson
import pytest
import requests

from fitonfhir_sandbox.faults import FaultRule, FaultSpecError
from fitonfhir_sandbox.synthetic import ORPHAN_STREAM_ID, day_range_ns

HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
START, END = day_range_ns(date(2025, 3, 1))


@pytest.fixture(autouse=True)
def _clear(sandbox):
    sandbox.clear_faults()
    yield
    sandbox.clear_faults()


@pytest.fixture
def user(sandbox):
    tokens = sandbox.onboard("faulty@example.com")
    return tokens | {"headers": {"Authorization": "Bearer " + tokens["access_token"]}}


def _dataset(sandbox, user, stream=HR_MERGED):
    url = f"{sandbox.fit_url}users/me/dataSources/{quote(stream, safe='')}/datasets/{START}-{END}"
    return requests.get(url, headers=user["headers"], timeout=10)


def _sources(sandbox, user):
    return requests.get(sandbox.fit_url + "users/me/dataSources", headers=user["headers"], timeout=10)


def test_429_with_retry_after_fires_count_times(sandbox, user):
    sandbox.add_fault(path="/datasets/", status=429, retry_after=7, count=2)
    for _ in range(2):
        answer = _dataset(sandbox, user)
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "7"
        assert answer.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert _dataset(sandbox, user).status_code == 200


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors_use_googles_envelope(sandbox, user, status, name):
    sandbox.add_fault(path="/dataSources$", status=status)
    answer = _sources(sandbox, user)
    assert answer.status_code == status and answer.json()["error"]["status"] == name
    assert _sources(sandbox, user).status_code == 200


def test_a_delay_slows_the_response_without_breaking_it(sandbox, user):
    sandbox.add_fault(path="/dataSources$", delay=0.4)
    started = time.perf_counter()
    answer = _sources(sandbox, user)
    assert answer.status_code == 200 and time.perf_counter() - started >= 0.4


def test_method_filter_limits_a_rule(sandbox, user):
    sandbox.add_fault(path="/dataSources$", method="POST", status=500)
    assert _sources(sandbox, user).status_code == 200
    assert len(sandbox.context.faults.rules()) == 1


def test_unlimited_rules_fire_until_cleared(sandbox, user):
    sandbox.add_fault(path="/dataSources$", status=503, count=None)
    assert [_sources(sandbox, user).status_code for _ in range(3)] == [503, 503, 503]
    sandbox.clear_faults()
    assert _sources(sandbox, user).status_code == 200


def test_invalid_grant_on_the_token_endpoint(sandbox, user):
    sandbox.add_fault(path="^/token$", error="invalid_grant")
    answer = sandbox.refresh(user["refresh_token"])
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    assert sandbox.refresh(user["refresh_token"]).status_code == 200


def test_revoking_a_user_over_http(sandbox, user):
    sub = sandbox.sub_for_email("faulty@example.com")
    answer = requests.post(f"{sandbox.url}/_sandbox/users/{sub}/revoke", json={}, timeout=5)
    assert answer.status_code == 200 and answer.json()["revoked_grants"] >= 1
    assert sandbox.refresh(user["refresh_token"]).json()["error"] == "invalid_grant"
    assert _sources(sandbox, user).status_code == 401


def _first_point(answer):
    return answer.json()["point"][0]


def test_malformed_missing_fields(sandbox, user):
    sandbox.add_fault(path="/datasets/", malformed="missing_fields")
    body = _dataset(sandbox, user).json()
    assert not {"dataSourceId", "minStartTimeNs", "maxEndTimeNs"} & set(body)
    assert "endTimeNanos" not in body["point"][0]


def test_malformed_bad_nanos(sandbox, user):
    sandbox.add_fault(path="/datasets/", malformed="bad_nanos")
    assert _first_point(_dataset(sandbox, user))["startTimeNanos"] == "abc"


def test_malformed_value_of_the_wrong_type(sandbox, user):
    sandbox.add_fault(path="/datasets/", malformed="wrong_value_type")
    value = _first_point(_dataset(sandbox, user))["value"][0]
    assert isinstance(value["fpVal"], str) and float(value["fpVal"]) > 0


def test_malformed_point_without_value(sandbox, user):
    sandbox.add_fault(path="/datasets/", malformed="missing_value")
    point = _first_point(_dataset(sandbox, user))
    assert "value" not in point and point["startTimeNanos"].isdigit()


def test_malformed_truncated_json(sandbox, user):
    sandbox.add_fault(path="/datasets/", malformed="not_json")
    answer = _dataset(sandbox, user)
    assert answer.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(answer.content)
    assert orjson.loads(_dataset(sandbox, user).content)["point"]


def test_orphan_source_toggle_for_one_user(sandbox, user):
    sub = sandbox.sub_for_email("faulty@example.com")
    sandbox.add_fault(orphan_source=True, sub=sub)
    other = {"Authorization": "Bearer " + sandbox.onboard("clean@example.com")["access_token"]}
    sources = _sources(sandbox, user).json()["dataSource"]
    orphan = next(s for s in sources if s["dataStreamId"] == ORPHAN_STREAM_ID)
    assert "device" not in orphan and "packageName" not in orphan.get("application", {})
    assert _dataset(sandbox, user, ORPHAN_STREAM_ID).json()["point"]
    assert ORPHAN_STREAM_ID not in {
        s["dataStreamId"] for s in _sources(sandbox, {"headers": other}).json()["dataSource"]
    }
    assert _sources(sandbox, user).status_code == 200  # a toggle is not used up
    sandbox.clear_faults()
    assert _dataset(sandbox, user, ORPHAN_STREAM_ID).status_code == 404


def test_fhir_path_faults_answer_with_an_operation_outcome(sandbox):
    sandbox.add_fault(path="^/fhir", status=503, retry_after=2)
    answer = requests.get(sandbox.fhir_url + "/metadata", timeout=5)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_control_api_adds_lists_and_clears_rules(sandbox, user):
    answer = requests.post(
        sandbox.url + "/_sandbox/faults",
        json={"rules": [{"path": "/dataSources$", "status": 500}, {"path": "^/token$", "delay": 0.01}]},
        timeout=5,
    )
    assert answer.status_code == 201 and len(answer.json()["rules"]) == 2
    listed = requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json()["rules"]
    assert [r["path"] for r in listed] == ["/dataSources$", "^/token$"]
    assert _sources(sandbox, user).status_code == 500
    assert requests.delete(sandbox.url + "/_sandbox/faults", timeout=5).status_code == 204
    assert requests.get(sandbox.url + "/_sandbox/faults", timeout=5).json() == {"rules": []}


def test_control_api_faults_never_hit_the_control_api(sandbox):
    sandbox.add_fault(path=".*", status=500, count=None)
    assert requests.get(sandbox.url + "/_sandbox/faults", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"path": "(", "status": 500}, "'path'"),
        ({"path": "/x", "status": 200}, "'status'"),
        ({"path": "/x"}, "needs one of"),
        ({"path": "/x", "status": 500, "malformed": "bad_nanos"}, "one effect"),
        ({"path": "/x", "status": 500, "retry_after": 3}, "'retry_after'"),
        ({"path": "/x", "status": 429, "retry_after": -1}, "'retry_after'"),
        ({"path": "/x", "malformed": "garbage"}, "'malformed'"),
        ({"path": "/x", "error": "invalid_client"}, "'error'"),
        ({"path": "/x", "status": 500, "count": 0}, "'count'"),
        ({"path": "/x", "delay": 1000}, "'delay'"),
        ({"path": "/x", "status": 500, "colour": "red"}, "colour"),
        ({"path": "/x", "status": 500, "sub": "1"}, "'sub'"),
        ({"path": "/x", "method": "GET /", "status": 500}, "'method'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_fault_specs_are_rejected_naming_the_field(sandbox, spec, fragment):
    answer = requests.post(sandbox.url + "/_sandbox/faults", json=spec, timeout=5)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]
    with pytest.raises(FaultSpecError, match=fragment.strip("'")):
        FaultRule.from_json(spec)
    assert sandbox.context.faults.rules() == []


def test_control_api_rejects_bodies_that_are_not_json(sandbox):
    answer = requests.post(
        sandbox.url + "/_sandbox/faults",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]


def test_control_api_settings_clock_and_account_lookup(sandbox):
    answer = requests.post(
        sandbox.url + "/_sandbox/settings", json={"rotate_refresh_tokens": True}, timeout=5
    )
    assert answer.json() == {"rotate_refresh_tokens": True}
    assert sandbox.context.rotate_refresh_tokens is True
    requests.post(sandbox.url + "/_sandbox/settings", json={"rotate_refresh_tokens": False}, timeout=5)
    assert (
        requests.post(
            sandbox.url + "/_sandbox/settings", json={"rotate_refresh_tokens": "yes"}, timeout=5
        ).status_code
        == 400
    )

    before = sandbox.now()
    moved = requests.post(sandbox.url + "/_sandbox/clock", json={"advance_seconds": 100}, timeout=5).json()[
        "now"
    ]
    assert moved >= before + 100
    assert (
        requests.post(sandbox.url + "/_sandbox/clock", json={"advance_seconds": -5}, timeout=5).status_code
        == 400
    )

    found = requests.get(
        sandbox.url + "/_sandbox/accounts", params={"email": "x@example.com"}, timeout=5
    ).json()
    assert found["sub"] == sandbox.sub_for_email("x@example.com")
    assert (
        requests.get(sandbox.url + "/_sandbox/accounts", params={"email": "nope"}, timeout=5).status_code
        == 400
    )
    assert (
        requests.post(sandbox.url + "/_sandbox/users/not-a-sub/revoke", json={}, timeout=5).status_code == 400
    )
