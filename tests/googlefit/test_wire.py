"""Wire conversion: Google's string int64s become ints, everything else is kept, bad input is named."""

from __future__ import annotations

import copy

import orjson
import pytest

from fitonfhir_dagster.googlefit.fit_client import DatasetPage, assign_to_day
from fitonfhir_dagster.googlefit.fit_errors import MalformedDataset
from fitonfhir_dagster.googlefit.wire import BadPoint, convert_dataset, parse_dataset, reading_identity

STREAM = "derived:com.google.blood_pressure:com.google.android.gms:merged"


def google_page() -> dict:
    """A page as Google's wire format has it (int64 as strings)."""
    return {
        "minStartTimeNs": "1700000000000000000",
        "maxEndTimeNs": "1700086399999999999",
        "dataSourceId": STREAM,
        "nextPageToken": "next-1",
        "point": [
            {
                "startTimeNanos": "1700000100000000000",
                "endTimeNanos": "1700000100000000000",
                "dataTypeName": "com.google.blood_pressure",
                "originDataSourceId": "raw:com.google.blood_pressure:com.example:user_input",
                "modifiedTimeMillis": "1700000200000",
                "computationTimeMillis": "1700000300000",
                "rawTimestampNanos": "1700000100000000001",
                "value": [
                    {"fpVal": 120.0},
                    {"fpVal": 80},
                    {"intVal": 2},
                    {"intVal": 3, "mapVal": []},
                    {"stringVal": "note", "mapVal": [{"key": "k", "value": {"fpVal": 1.5}}]},
                ],
            }
        ],
    }


def test_int64_fields_become_ints_and_every_other_field_is_kept():
    dataset, bad = convert_dataset(google_page(), stream_id=STREAM, page_index=0)
    assert bad == []
    assert dataset["minStartTimeNs"] == 1700000000000000000
    assert dataset["maxEndTimeNs"] == 1700086399999999999
    point = dataset["point"][0]
    assert point["startTimeNanos"] == 1700000100000000000
    assert point["endTimeNanos"] == 1700000100000000000
    assert point["modifiedTimeMillis"] == 1700000200000
    assert point["computationTimeMillis"] == 1700000300000
    assert point["rawTimestampNanos"] == 1700000100000000001
    for name in ("startTimeNanos", "endTimeNanos", "modifiedTimeMillis", "computationTimeMillis"):
        assert type(point[name]) is int
    assert dataset["dataSourceId"] == STREAM
    assert dataset["nextPageToken"] == "next-1"
    assert point["originDataSourceId"].startswith("raw:")
    assert point["dataTypeName"] == "com.google.blood_pressure"
    assert point["value"] == google_page()["point"][0]["value"]


def test_int64_given_as_json_numbers_are_accepted_and_absent_optional_fields_stay_absent():
    page = {"point": [{"startTimeNanos": 5, "endTimeNanos": 7, "value": []}]}
    dataset, _ = convert_dataset(page, stream_id=STREAM, page_index=0)
    assert dataset == {"point": [{"startTimeNanos": 5, "endTimeNanos": 7, "value": []}]}


def test_an_empty_page_is_valid():
    dataset, bad = convert_dataset({"dataSourceId": STREAM, "point": []}, stream_id=STREAM, page_index=3)
    assert dataset["point"] == [] and bad == []


def test_a_page_without_point_names_stream_and_page():
    page = google_page()
    del page["point"]
    with pytest.raises(MalformedDataset) as err:
        convert_dataset(page, stream_id=STREAM, page_index=2)
    assert str(err.value) == f"stream {STREAM!r} page 2: field 'point' is missing"


def test_a_page_whose_point_is_not_a_list_is_rejected():
    with pytest.raises(MalformedDataset, match="field 'point' is not a list"):
        convert_dataset({"point": {"a": 1}}, stream_id=STREAM, page_index=0)


def test_a_page_that_is_not_an_object_is_rejected():
    with pytest.raises(MalformedDataset, match=r"page 0: expected a dataset object, got list"):
        convert_dataset([], stream_id=STREAM, page_index=0)


def test_a_bad_page_level_int64_is_rejected():
    page = google_page()
    page["minStartTimeNs"] = "yesterday"
    with pytest.raises(
        MalformedDataset, match=r"page 1: field 'minStartTimeNs' is not an int64: 'yesterday'"
    ):
        convert_dataset(page, stream_id=STREAM, page_index=1)


def page_with_second_point(mutate) -> dict:
    page = google_page()
    second = copy.deepcopy(page["point"][0])
    mutate(second)
    page["point"].append(second)
    return page


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda p: p.update(startTimeNanos="12a"), "startTimeNanos", "expected an int64, got '12a'"),
        (lambda p: p.pop("startTimeNanos"), "startTimeNanos", "missing"),
        (lambda p: p.update(endTimeNanos=1.5), "endTimeNanos", "expected an int64, got 1.5"),
        (lambda p: p.update(endTimeNanos="1"), "endTimeNanos", "ends (1) before it starts"),
        (lambda p: p.update(modifiedTimeMillis="soon"), "modifiedTimeMillis", "not an int64: 'soon'"),
        (lambda p: p.update(rawTimestampNanos=True), "rawTimestampNanos", "not an int64: True"),
        (lambda p: p.pop("value"), "value", "missing"),
        (lambda p: p.update(value="120/80"), "value", "expected a list, got '120/80'"),
        (lambda p: p["value"].__setitem__(1, 80), "value[1]", "expected an object, got int"),
        (lambda p: p["value"][0].update(fpVal="high"), "value[0].fpVal", "not a number: 'high'"),
        (lambda p: p["value"][0].update(fpVal=True), "value[0].fpVal", "not a number: True"),
        (lambda p: p["value"][2].update(intVal="two"), "value[2].intVal", "not an integer: 'two'"),
        (lambda p: p["value"][3].update(intVal=3.5), "value[3].intVal", "not an integer: 3.5"),
    ],
)
def test_a_bad_point_error_names_stream_page_point_and_field(mutate, field, problem):
    with pytest.raises(MalformedDataset) as err:
        convert_dataset(page_with_second_point(mutate), stream_id=STREAM, page_index=4)
    message = str(err.value)
    assert message.startswith(f"stream {STREAM!r} page 4 point 1 field {field!r}: ")
    assert problem in message


def test_a_point_that_is_not_an_object_is_named():
    with pytest.raises(MalformedDataset, match=r"page 0 point 0 field 'point': expected an object, got str"):
        convert_dataset({"point": ["x"]}, stream_id=STREAM, page_index=0)


def test_numeric_string_intval_becomes_int():
    page = page_with_second_point(lambda p: p["value"][2].update(intVal="4"))
    dataset, _ = convert_dataset(page, stream_id=STREAM, page_index=0)
    assert dataset["point"][1]["value"][2]["intVal"] == 4


def test_collect_mode_keeps_good_points_and_returns_bad_ones_untouched_with_reasons():
    page = google_page()
    good = page["point"][0]
    missing_value = {"startTimeNanos": "10", "endTimeNanos": "11"}
    bad_fp = copy.deepcopy(good)
    bad_fp["value"][1]["fpVal"] = "eighty"
    page["point"] = [missing_value, good, bad_fp]
    original_bad_fp = copy.deepcopy(bad_fp)

    dataset, bad = convert_dataset(page, stream_id=STREAM, page_index=0, mode="collect")

    assert [p["startTimeNanos"] for p in dataset["point"]] == [1700000100000000000]
    assert bad == [
        BadPoint(
            {"startTimeNanos": "10", "endTimeNanos": "11"},
            f"stream {STREAM!r} page 0 point 0 field 'value': missing",
        ),
        BadPoint(
            original_bad_fp,
            f"stream {STREAM!r} page 0 point 2 field 'value[1].fpVal': not a number: 'eighty'",
        ),
    ]
    point_json, reason = bad[1]  # usable as a plain (point_json, reason) pair
    assert point_json["startTimeNanos"] == "1700000100000000000"  # exactly as received


def test_collect_mode_still_raises_on_page_level_defects():
    with pytest.raises(MalformedDataset, match="field 'point' is missing"):
        convert_dataset({}, stream_id=STREAM, page_index=0, mode="collect")


def test_body_that_is_not_json_is_named():
    with pytest.raises(MalformedDataset, match=rf"stream {STREAM!r} page 5: response is not JSON"):
        parse_dataset(b"<html>oops</html>", stream_id=STREAM, page_index=5)


def test_identity_ignores_key_order_of_values_but_not_the_values():
    a = {"startTimeNanos": 1, "endTimeNanos": 2, "value": [{"fpVal": 1.0, "mapVal": []}]}
    b = {
        "startTimeNanos": 1,
        "endTimeNanos": 2,
        "value": [{"mapVal": [], "fpVal": 1.0}],
        "modifiedTimeMillis": 9,
    }
    c = {"startTimeNanos": 1, "endTimeNanos": 2, "value": [{"fpVal": 1.5}]}
    assert reading_identity(a) == reading_identity(b)
    assert reading_identity(a) != reading_identity(c)


def test_a_50k_point_day_of_50_pages_is_assigned_whole_and_in_order():
    """50 pages of 1000 heart-rate points, as the API pages a busy day: parse, convert, assign to the day."""
    day_start = 1_736_899_200_000_000_000  # 2025-01-15T00:00Z
    bodies = []
    for page in range(50):
        points = [
            {
                "startTimeNanos": str(day_start + (page * 1000 + i) * 1_000_000_000),
                "endTimeNanos": str(day_start + (page * 1000 + i) * 1_000_000_000),
                "dataTypeName": "com.google.heart_rate.bpm",
                "originDataSourceId": "raw:com.google.heart_rate.bpm:com.example:watch",
                "modifiedTimeMillis": "1736900000000",
                "value": [{"fpVal": 60.0 + i % 40, "mapVal": []}],
            }
            for i in range(1000)
        ]
        bodies.append(orjson.dumps({"minStartTimeNs": str(day_start), "point": points}))

    def fetch_like_the_client():
        pages = [
            DatasetPage(STREAM, i, *parse_dataset(body, stream_id=STREAM, page_index=i))
            for i, body in enumerate(bodies)
        ]
        return assign_to_day(pages, day_start, day_start + 86_400 * 10**9 - 1)

    pages = fetch_like_the_client()  # its speed is measured by bench/device_messages.py, not timed here
    assert sum(len(p.points) for p in pages) == 50_000
    assert pages[-1].points[-1]["startTimeNanos"] == day_start + 49_999 * 1_000_000_000


def test_paused_gc_restores_the_collector_and_nests():
    import gc

    from fitonfhir_dagster.gc_pause import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause leaves it to the outer one
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a collector paused by the caller stays paused
    finally:
        gc.enable()
