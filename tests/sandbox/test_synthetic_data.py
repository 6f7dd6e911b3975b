"""Synthetic Fit data: deterministic, realistic, complete within a week, fast, shaped like the catalog."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest

from fitonfhir_dagster.googlefit import catalog
from fitonfhir_sandbox import synthetic
from fitonfhir_sandbox.accounts import sub_for_email

NOW_MS = 4_102_444_800_000  # 2100-01-01: everything before it is uploaded
USERS = [sub_for_email(f"user{i}@example.com") for i in range(12)]
RANGES = {
    "com.google.heart_rate.bpm": [(40, 190)],
    "com.google.step_count.delta": [(1, 2000)],
    "com.google.heart_minutes": [(1, 2)],
    "com.google.weight": [(40, 150)],
    "com.google.height": [(1.4, 2.1)],
    "com.google.body.fat.percentage": [(5, 45)],
    "com.google.blood_pressure": [(80, 180), (45, 120), (1, 4), (1, 4)],
    "com.google.blood_glucose": [(3, 12), (1, 4), (1, 5), (1, 4), (1, 6)],
    "com.google.oxygen_saturation": [(90, 100), (0, 5), (0, 1), (1, 1), (1, 1)],
    "com.google.body.temperature": [(35.5, 38.5), (1, 10)],
}


def _merged(sub, type_name):
    return next(
        s["dataStreamId"]
        for s in synthetic.user_sources(sub)
        if s["dataType"]["name"] == type_name and catalog.is_merged_stream(s["dataStreamId"])
    )


def _points(sub, stream, first_day, days=1, **kwargs):
    start, _ = synthetic.day_range_ns(first_day)
    _, end = synthetic.day_range_ns(first_day + timedelta(days=days - 1))
    return synthetic.dataset(sub, stream, start, end, now_ms=NOW_MS, **kwargs)["point"]


@pytest.mark.parametrize("first_day", [date(2025, 1, 1), date(2025, 6, 17)])
def test_every_type_appears_within_any_seven_days_for_every_user(first_day):
    for sub in USERS:
        for type_name in catalog.DATA_TYPE_NAMES:
            assert _points(sub, _merged(sub, type_name), first_day, days=7), (sub, type_name)


def test_values_are_realistic_and_match_the_catalog_field_formats():
    types = catalog.data_types()
    for sub in USERS[:4]:
        for type_name, limits in RANGES.items():
            fields = types[type_name].fields
            required = sum(not f.optional for f in fields)
            for point in _points(sub, _merged(sub, type_name), date(2025, 2, 1), days=7):
                values = point["value"]
                assert required <= len(values) <= len(fields), (type_name, values)
                for field, value, (low, high) in zip(fields, values, limits, strict=False):
                    assert set(value) == {field.value_key, "mapVal"} and value["mapVal"] == []
                    assert low <= value[field.value_key] <= high, (type_name, field.name, value)
                    if field.format == "integer":
                        assert isinstance(value[field.value_key], int)


def test_optional_fields_are_sometimes_absent():
    lengths = {
        len(p["value"])
        for sub in USERS
        for p in _points(sub, _merged(sub, "com.google.blood_pressure"), date(2025, 2, 1), days=14)
    }
    assert {2, 4} <= lengths


def test_heart_rate_comes_every_three_to_five_minutes_while_awake():
    points = _points(USERS[0], _merged(USERS[0], "com.google.heart_rate.bpm"), date(2025, 2, 3))
    gaps = [
        int(b["startTimeNanos"]) - int(a["startTimeNanos"]) for a, b in zip(points, points[1:], strict=False)
    ]
    assert 150 <= len(points) <= 400
    assert min(gaps) >= 180 * 10**9 and max(gaps) <= 300 * 10**9


def test_merged_streams_are_the_union_of_their_origin_streams():
    sub = USERS[1]
    for type_name in catalog.DATA_TYPE_NAMES:
        merged = _points(sub, _merged(sub, type_name), date(2025, 2, 5), days=3)
        from_origins = [
            p
            for origin in synthetic.origins(sub, type_name)
            for p in _points(sub, origin, date(2025, 2, 5), days=3)
        ]
        key = lambda p: (p["startTimeNanos"], p["endTimeNanos"], str(p["value"]))  # noqa: E731
        assert sorted(map(key, merged)) == sorted(map(key, from_origins)), type_name


def test_the_same_request_is_the_same_data_and_users_differ():
    stream = _merged(USERS[2], "com.google.step_count.delta")
    one = _points(USERS[2], stream, date(2025, 3, 3))
    synthetic.clear_caches()
    assert _points(USERS[2], stream, date(2025, 3, 3)) == one
    assert _points(USERS[3], stream, date(2025, 3, 3)) != one


def test_points_appear_only_once_uploaded():
    sub = USERS[4]
    stream = _merged(sub, "com.google.heart_rate.bpm")
    start, end = synthetic.day_range_ns(date(2025, 3, 4))
    point = _points(sub, stream, date(2025, 3, 4))[10]
    modified = int(point["modifiedTimeMillis"])
    before = synthetic.dataset(sub, stream, start, end, now_ms=modified - 1)["point"]
    after = synthetic.dataset(sub, stream, start, end, now_ms=modified)["point"]
    assert point not in before and point in after
    assert int(point["endTimeNanos"]) // 10**6 < modified


def test_a_user_day_over_all_streams_generates_well_under_100_ms():
    sub = sub_for_email("speed@example.com")
    start, end = synthetic.day_range_ns(date(2025, 4, 4))
    started = time.perf_counter()
    total = sum(
        len(synthetic.dataset(sub, s["dataStreamId"], start, end, now_ms=NOW_MS)["point"])
        for s in synthetic.user_sources(sub)
    )
    elapsed = time.perf_counter() - started
    assert total > 300
    assert elapsed < 0.1, elapsed


def test_heavy_day_has_about_fifty_thousand_points_paged_newest_first():
    pages = synthetic.heavy_day_pages(day=date(2025, 1, 20), limit=5000)
    assert len(pages) == 10
    assert all(len(p["point"]) == 5000 for p in pages)
    assert "nextPageToken" not in pages[-1]
    assert int(pages[0]["point"][0]["startTimeNanos"]) > int(pages[1]["point"][-1]["startTimeNanos"])
    assert sum(len(p["point"]) for p in pages) == synthetic.HEAVY_POINTS_PER_DAY


def test_device_uids_replace_the_samples_placeholder():
    sub = USERS[5]
    for source in synthetic.user_sources(sub):
        if "device" in source:
            assert source["device"]["uid"] == synthetic.device_uid(sub, source["device"]["type"])
            assert "12345678" not in source["dataStreamId"]


def test_the_orphan_source_has_neither_package_name_nor_device():
    sources = synthetic.user_sources(USERS[6], orphan=True)
    orphan = next(s for s in sources if s["dataStreamId"] == synthetic.ORPHAN_STREAM_ID)
    assert "device" not in orphan and "packageName" not in orphan.get("application", {})
    assert _points(USERS[6], synthetic.ORPHAN_STREAM_ID, date(2025, 1, 2), orphan=True)
    with pytest.raises(synthetic.UnknownStream):
        _points(USERS[6], synthetic.ORPHAN_STREAM_ID, date(2025, 1, 2))


def test_a_foreign_page_token_is_refused():
    sub = USERS[7]
    stream = _merged(sub, "com.google.heart_rate.bpm")
    start, end = synthetic.day_range_ns(date(2025, 1, 2))
    token = synthetic.dataset(sub, stream, start, end, now_ms=NOW_MS, limit=3)["nextPageToken"]
    with pytest.raises(synthetic.BadPageToken, match="different dataset"):
        synthetic.dataset(sub, stream, start, end - 1, now_ms=NOW_MS, limit=3, page_token=token)
