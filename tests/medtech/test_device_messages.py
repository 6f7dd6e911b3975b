"""Device messages: the original's event contract, with its two defects fixed."""

import orjson
import pytest

from fitonfhir_dagster.fitmapping.device_messages import build_device_messages, device_identifier
from fitonfhir_dagster.googlefit.catalog import sample_data_sources

SUB = "110248495921238986420"


def _page(stream: str, n: int, start: int = 1_764_288_000_000_000_000) -> dict:
    return {
        "dataSourceId": stream,
        "minStartTimeNs": start,
        "maxEndTimeNs": start + 86_400_000_000_000 - 1,
        "point": [
            {
                "dataTypeName": "com.google.heart_rate.bpm",
                "startTimeNanos": start + i * 60_000_000_000,
                "endTimeNanos": start + i * 60_000_000_000,
                "modifiedTimeMillis": 1_764_300_000_000,
                "originDataSourceId": "raw:com.google.heart_rate.bpm:com.example:watch",
                "value": [{"fpVal": 60.0 + i % 40, "mapVal": []}],
            }
            for i in range(n)
        ],
    }


def test_device_identifier_is_sub_package_and_uid_with_empty_parts_left_out():
    by_id = {s["dataStreamId"]: s for s in sample_data_sources()}
    watch = by_id["raw:com.google.heart_rate.bpm:com.google.android.gms:appleinc.:watch:12345678:from_device"]
    merged = by_id["derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"]
    assert device_identifier(SUB, watch) == f"{SUB}.com.google.android.gms.12345678"
    assert device_identifier(SUB, merged) == f"{SUB}.com.google.android.gms"
    assert device_identifier(SUB, {"dataStreamId": "x", "device": {"uid": "abc"}}) == f"{SUB}.abc"


def test_a_source_with_neither_package_nor_uid_gets_a_stable_fallback_instead_of_failing():
    orphan = {"dataStreamId": "raw:com.google.weight:", "application": {}, "device": {"uid": ""}}
    first = device_identifier(SUB, orphan)
    assert first.startswith(f"{SUB}.stream-") and first == device_identifier(SUB, dict(orphan))
    other = device_identifier(SUB, {"dataStreamId": "raw:com.google.height:"})
    assert other != first


def test_message_is_the_dataset_with_numeric_nanos_plus_patient_and_device_identifiers():
    stream = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
    source = {"dataStreamId": stream, "application": {"packageName": "com.google.android.gms"}}
    [message] = build_device_messages(SUB, source, [_page(stream, 3)])
    body = orjson.loads(message.body)
    assert body["patientIdentifier"] == SUB
    assert body["deviceIdentifier"] == f"{SUB}.com.google.android.gms"
    assert body["dataSourceId"] == stream
    assert isinstance(body["minStartTimeNs"], int) and isinstance(body["point"][0]["endTimeNanos"], int)
    assert [p["value"][0]["fpVal"] for p in body["point"]] == [60.0, 61.0, 62.0]
    assert message.points == 3


def test_empty_pages_produce_no_message():
    assert build_device_messages(SUB, {"dataStreamId": "s"}, [{"dataSourceId": "s", "point": []}]) == []


def test_an_oversize_page_is_split_into_messages_that_carry_every_point_exactly_once():
    stream = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
    page = _page(stream, 5_000)
    messages = build_device_messages(SUB, {"dataStreamId": stream}, [page], max_bytes=64_000)
    assert len(messages) > 1
    assert all(len(m.body) <= 64_000 for m in messages)
    starts = [p["startTimeNanos"] for m in messages for p in orjson.loads(m.body)["point"]]
    assert sorted(starts) == sorted(p["startTimeNanos"] for p in page["point"])
    assert len(starts) == len(set(starts)) == sum(m.points for m in messages)


def test_a_single_point_larger_than_the_limit_is_an_error_not_a_silent_drop():
    stream = "s"
    page = _page(stream, 1)
    page["point"][0]["value"] = [{"stringVal": "x" * 5_000}]
    with pytest.raises(ValueError, match="more than the 1000-byte message limit"):
        build_device_messages(SUB, {"dataStreamId": stream}, [page], max_bytes=1_000)
