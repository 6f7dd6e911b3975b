"""The sandbox's Fit REST v1 speaks Google's wire format: bearer auth, sources, datasets, paging."""

from __future__ import annotations

from datetime import date
from urllib.parse import quote

import pytest
import requests

from fitonfhir_dagster.googlefit import catalog
from fitonfhir_sandbox.synthetic import day_range_ns

DAY = date(2025, 3, 1)
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
STEPS_MERGED = "derived:com.google.step_count.delta:com.google.android.gms:merge_step_deltas"
ACTIVITY = "https://www.googleapis.com/auth/fitness.activity.read"


@pytest.fixture
def alice(sandbox):
    return {"Authorization": "Bearer " + sandbox.onboard("alice@example.com")["access_token"]}


def _get(sandbox, path, headers, **params):
    return requests.get(sandbox.fit_url + "users/me/" + path, headers=headers, params=params, timeout=10)


def _dataset(sandbox, headers, stream, start, end, **params):
    return _get(sandbox, f"dataSources/{quote(stream, safe='')}/datasets/{start}-{end}", headers, **params)


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer ya29.made-up", "Basic abc"])
def test_fit_requires_a_live_bearer_token(sandbox, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = _get(sandbox, "dataSources", headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    error = answer.json()["error"]
    assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED" and error["message"]


def test_expired_and_revoked_access_tokens_are_rejected(sandbox):
    expiring = {"Authorization": "Bearer " + sandbox.onboard("expiring@example.com")["access_token"]}
    assert _get(sandbox, "dataSources", expiring).status_code == 200
    sandbox.advance_clock(3600)
    assert _get(sandbox, "dataSources", expiring).status_code == 401

    tokens = sandbox.onboard("revoked@example.com")
    revoked = {"Authorization": "Bearer " + tokens["access_token"]}
    sandbox.revoke_user(sandbox.sub_for_email("revoked@example.com"))
    assert _get(sandbox, "dataSources", revoked).json()["error"]["status"] == "UNAUTHENTICATED"


def test_only_me_is_a_valid_user_id(sandbox, alice):
    answer = requests.get(sandbox.fit_url + "users/12345/dataSources", headers=alice, timeout=5)
    assert answer.status_code == 403 and answer.json()["error"]["status"] == "PERMISSION_DENIED"


def test_data_sources_cover_every_merged_stream_with_per_user_device_uids(sandbox, alice):
    sources = _get(sandbox, "dataSources", alice).json()["dataSource"]
    ids = {s["dataStreamId"] for s in sources}
    merged = {s["dataType"]["name"] for s in sources if catalog.is_merged_stream(s["dataStreamId"])}
    assert merged == set(catalog.DATA_TYPE_NAMES)
    assert any(i.startswith("raw:") for i in ids)
    uids = {s["device"]["uid"] for s in sources if "device" in s}
    assert uids and "12345678" not in uids and not any("12345678" in i for i in ids)
    for source in sources:
        if "device" in source:
            assert f":{source['device']['uid']}:" in source["dataStreamId"]

    bob = {"Authorization": "Bearer " + sandbox.onboard("bob@example.com")["access_token"]}
    bob_uids = {
        s["device"]["uid"] for s in _get(sandbox, "dataSources", bob).json()["dataSource"] if "device" in s
    }
    assert not uids & bob_uids


def test_data_sources_keep_googles_shape(sandbox, alice):
    source = next(
        s for s in _get(sandbox, "dataSources", alice).json()["dataSource"] if s["dataStreamId"] == HR_MERGED
    )
    assert source["type"] == "derived" and source["dataStreamName"] == "merge_heart_rate_bpm"
    assert source["dataType"] == {
        "name": "com.google.heart_rate.bpm",
        "field": [{"name": "bpm", "format": "floatPoint"}],
    }
    assert source["application"] == {"packageName": "com.google.android.gms"}


def test_data_type_filter_is_repeatable(sandbox, alice):
    answer = _get(sandbox, "dataSources", alice, dataTypeName=["com.google.weight", "com.google.height"])
    names = {s["dataType"]["name"] for s in answer.json()["dataSource"]}
    assert names == {"com.google.weight", "com.google.height"}


def test_single_data_source_lookup(sandbox, alice):
    answer = _get(sandbox, f"dataSources/{quote(STEPS_MERGED, safe='')}", alice)
    assert answer.status_code == 200 and answer.json()["dataStreamId"] == STEPS_MERGED


def test_sources_follow_the_granted_scopes(sandbox):
    tokens = sandbox.onboard("steps-only@example.com", scopes=(ACTIVITY,))
    headers = {"Authorization": "Bearer " + tokens["access_token"]}
    names = {s["dataType"]["name"] for s in _get(sandbox, "dataSources", headers).json()["dataSource"]}
    assert names == {"com.google.step_count.delta", "com.google.heart_minutes"}
    start, end = day_range_ns(DAY)
    assert _dataset(sandbox, headers, HR_MERGED, start, end).status_code == 404


def test_dataset_uses_strings_for_int64_and_echoes_the_range(sandbox, alice):
    start, end = day_range_ns(DAY)
    body = _dataset(sandbox, alice, HR_MERGED, start, end).json()
    assert body["minStartTimeNs"] == str(start) and body["maxEndTimeNs"] == str(end)
    assert body["dataSourceId"] == HR_MERGED
    assert "nextPageToken" not in body
    assert len(body["point"]) > 150  # heart rate every 3-5 minutes while awake
    for point in body["point"]:
        for key in ("startTimeNanos", "endTimeNanos", "modifiedTimeMillis"):
            assert isinstance(point[key], str) and point[key].isdigit()
        assert point["dataTypeName"] == "com.google.heart_rate.bpm"
        assert point["originDataSourceId"].startswith(("raw:", "derived:"))
        assert point["value"] == [{"fpVal": point["value"][0]["fpVal"], "mapVal": []}]


def test_paging_starts_at_the_newest_points_and_walks_back(sandbox, alice):
    start, end = day_range_ns(DAY)
    everything = _dataset(sandbox, alice, STEPS_MERGED, start, end).json()["point"]
    first = _dataset(sandbox, alice, STEPS_MERGED, start, end, limit=10).json()
    assert first["point"] == everything[-10:]
    pages, token = [first["point"]], first["nextPageToken"]
    while token:
        page = _dataset(sandbox, alice, STEPS_MERGED, start, end, limit=10, pageToken=token).json()
        assert len(page["point"]) <= 10
        pages.append(page["point"])
        token = page.get("nextPageToken")
    assert [p for page in reversed(pages) for p in page] == everything


def test_overlap_semantics_include_points_touching_the_range(sandbox, alice):
    start, end = day_range_ns(DAY)
    interval = _dataset(sandbox, alice, STEPS_MERGED, start, end).json()["point"][5]
    p_start, p_end = int(interval["startTimeNanos"]), int(interval["endTimeNanos"])
    assert p_start < p_end

    def contains(lo, hi):
        return interval in _dataset(sandbox, alice, STEPS_MERGED, lo, hi).json()["point"]

    assert contains(p_start + 1, p_start + 1)  # range inside the interval
    assert contains(p_end, p_end + 10**9)  # range starts at the point's end
    assert contains(p_start - 10**9, p_start)  # range ends at the point's start
    assert not contains(p_end + 1, p_end + 10**9)
    assert not contains(p_start - 10**9, p_start - 1)


def test_same_request_gives_the_same_bytes(sandbox, alice):
    start, end = day_range_ns(DAY)
    one = _dataset(sandbox, alice, STEPS_MERGED, start, end, limit=25)
    two = _dataset(sandbox, alice, STEPS_MERGED, start, end, limit=25)
    assert one.content == two.content


@pytest.mark.parametrize("dataset_id", ["abc", "5-3", "1-", "-1-5", "99999999999999999999-1", "1.5-2"])
def test_malformed_dataset_ids_are_invalid_argument(sandbox, alice, dataset_id):
    answer = _get(sandbox, f"dataSources/{quote(HR_MERGED, safe='')}/datasets/{dataset_id}", alice)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and dataset_id in error["message"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"), ({"pageToken": "nonsense"}, "pageToken")],
)
def test_bad_paging_parameters_are_invalid_argument(sandbox, alice, params, fragment):
    start, end = day_range_ns(DAY)
    answer = _dataset(sandbox, alice, HR_MERGED, start, end, **params)
    assert answer.status_code == 400 and fragment in answer.json()["error"]["message"]


def test_a_page_token_only_works_for_its_own_dataset(sandbox, alice):
    start, end = day_range_ns(DAY)
    token = _dataset(sandbox, alice, HR_MERGED, start, end, limit=5).json()["nextPageToken"]
    answer = _dataset(sandbox, alice, STEPS_MERGED, start, end, limit=5, pageToken=token)
    assert answer.status_code == 400 and "different dataset" in answer.json()["error"]["message"]


def test_unknown_stream_is_not_found(sandbox, alice):
    answer = _dataset(sandbox, alice, "raw:com.google.weight:com.example:nothing", 0, 10)
    assert answer.status_code == 404 and answer.json()["error"]["status"] == "NOT_FOUND"


def test_no_data_before_history_starts_or_in_the_future(sandbox, alice):
    old_start, old_end = day_range_ns(date(2010, 1, 1))
    assert _dataset(sandbox, alice, HR_MERGED, old_start, old_end).json()["point"] == []
    future_start, future_end = day_range_ns(date(2100, 1, 1))
    assert _dataset(sandbox, alice, HR_MERGED, future_start, future_end).json()["point"] == []


def test_heavy_accounts_get_a_point_every_second(sandbox):
    heavy = {"Authorization": "Bearer " + sandbox.onboard("bench+heavy@example.com")["access_token"]}
    start, end = day_range_ns(DAY)
    page = _dataset(sandbox, heavy, HR_MERGED, start, end, limit=1000).json()
    assert len(page["point"]) == 1000 and page["nextPageToken"]
    starts = [int(p["startTimeNanos"]) for p in page["point"]]
    assert {b - a for a, b in zip(starts, starts[1:], strict=False)} == {10**9}
