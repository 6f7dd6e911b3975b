"""Every one of the original's 34 stream templates converts synthetic messages of its stream.

Expected Observations are derived independently from dataSources.json and the reference's rules
(identifier formula, SHA-256 ids, ms rounding up of endTimeNanos, enum tables), not from the engine.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime

import pytest

from fitonfhir_dagster.googlefit.catalog import ENUMS
from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import CreateIdentity
from tests.medtech.medtech_fitdata import (
    IOMT,
    SUB,
    T0_NS,
    data_sources,
    device_identifier,
    fixture_text,
    heart_rate_message,
    message,
    point,
    sample_values,
    source_by_stream,
    value_entry,
)

SOURCES = data_sources()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def type_name(source: dict) -> str:
    """Reference 6.2: colon-join of type, data type, package, manufacturer, model, stream name."""
    device = source.get("device") or {}
    parts = [
        source.get("type"),
        source["dataType"]["name"],
        (source.get("application") or {}).get("packageName"),
        device.get("manufacturer"),
        device.get("model"),
        source.get("dataStreamName"),
    ]
    return ":".join(p for p in parts if p)


def matching_type_names(source: dict) -> set[str]:
    """Templates whose unanchored regex parts all occur in this stream id (reference 6.2 and 7.13)."""
    found = set()
    for other in SOURCES:
        if other["dataType"]["name"] != source["dataType"]["name"]:
            continue
        parts = type_name(other).split(":")
        regexes = [parts[0], *parts[2:]]
        if all(re.search(r, source["dataStreamId"]) for r in regexes):
            found.add(type_name(other))
    return found


def instant(end_ns: int) -> str:
    ms = math.ceil(end_ns * 0.000001)
    moment = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{ms % 1000:03d}0000Z"


def segment(end_ns: int) -> str:
    return datetime.fromtimestamp(math.ceil(end_ns * 0.000001) // 1000, UTC).strftime("%Y%m%d%H%M%SZ")


@pytest.fixture(scope="module")
def converter() -> Converter:
    return Converter(
        fixture_text("devicecontent.json"),
        fixture_text("fhirmapping.json"),
        CreateIdentity(),
        clock=lambda: 0,
    )


def test_the_fixture_lists_34_streams_of_10_types():
    assert len(SOURCES) == 34
    assert len({s["dataType"]["name"] for s in SOURCES}) == 10


@pytest.mark.parametrize("source", SOURCES, ids=[s["dataStreamId"] for s in SOURCES])
def test_each_stream_converts_with_its_template(converter, source):
    data_type = source["dataType"]["name"]
    fields = source["dataType"]["field"]
    ends = [T0_NS, T0_NS + 61_000_000_000]
    points = [point(data_type, end, sample_values(source, i)) for i, end in enumerate(ends)]
    result = converter.convert([message(source, points)])

    expected_types = matching_type_names(source)
    assert type_name(source) in expected_types
    assert result.dead_letters == []
    assert result.points_matched == 2 * len(expected_types)
    assert {o["code"]["text"] for o in result.observations} == expected_types
    assert len(result.observations) == 2 * len(expected_types)

    patient = sha("_" + SUB)
    device = sha("_" + device_identifier(source))
    for obs in result.observations:
        end = ends[0] if obs["effectivePeriod"]["start"] == instant(ends[0]) else ends[1]
        values = sample_values(source, ends.index(end))
        name = obs["code"]["text"]
        ident = f"{patient}.{device}.{name}.{segment(end)}.{segment(end)}"
        assert obs["identifier"] == [{"system": IOMT, "value": ident}]
        assert obs["id"] == sha(f"{IOMT}_{ident}")
        assert obs["status"] == "final"
        assert obs["subject"] == {"reference": f"Patient/{patient}"}
        assert obs["device"] == {"reference": f"Device/{device}"}
        assert obs["effectivePeriod"] == {"start": instant(end), "end": instant(end)}
        assert obs["code"]["coding"] == [{"code": data_type}, {"system": IOMT, "code": name, "display": name}]
        if len(fields) == 1:
            key = "fpVal" if fields[0]["format"] == "floatPoint" else "intVal"
            assert obs["valueQuantity"] == {"value": values[0][key]}
            assert "component" not in obs
        else:
            assert "valueQuantity" not in obs
            got = {c["code"]["text"]: c for c in obs["component"]}
            assert list(got) == [f["name"] for f in fields]
            for f, v in zip(fields, values, strict=True):
                component = got[f["name"]]
                assert component["code"]["coding"][0] == {"code": f"{data_type}.{f['name']}"}
                if f["name"] in ENUMS:
                    assert component["valueString"] == ENUMS[f["name"]][v["intVal"]]
                else:
                    assert component["valueQuantity"] == {"value": v["fpVal"]}
    assert {p["id"] for p in result.patients} == {patient}
    assert {d["id"] for d in result.devices} == {device}


def test_the_merge_heart_rate_template_also_matches_the_resting_stream_as_in_the_original(converter):
    resting = source_by_stream(
        "derived:com.google.heart_rate.bpm:com.google.android.gms:resting_heart_rate<-merge_heart_rate_bpm"
    )
    msg = message(resting, [point("com.google.heart_rate.bpm", T0_NS, [value_entry("floatPoint", 55.0)])])
    names = sorted(o["code"]["text"] for o in converter.convert([msg]).observations)
    assert names == [
        "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm",
        "derived:com.google.heart_rate.bpm:com.google.android.gms:resting_heart_rate<-merge_heart_rate_bpm",
    ]


BP = "raw:com.google.blood_pressure:com.google.android.apps.fitness:user_input"


def bp_components(converter, position) -> dict:
    values = [
        value_entry("floatPoint", 120.0),
        value_entry("floatPoint", 80.0),
        value_entry("integer", position),
    ]
    values.append(value_entry("integer", 3))
    msg = message(source_by_stream(BP), [point("com.google.blood_pressure", T0_NS, values)])
    (obs,) = converter.convert([msg]).observations
    return {c["code"]["text"]: c for c in obs["component"]}


def test_enum_in_range_becomes_its_name(converter):
    components = bp_components(converter, 2)
    assert components["body_position"]["valueString"] == "BODY_POSITION_SITTING"
    assert components["blood_pressure_measurement_location"]["valueString"] == (
        "BLOOD_PRESSURE_MEASUREMENT_LOCATION_LEFT_UPPER_ARM"
    )
    assert components["blood_pressure_systolic"]["valueQuantity"] == {"value": 120}


def test_enum_out_of_range_or_missing_leaves_the_component_out(converter):
    assert "body_position" not in bp_components(converter, 9)
    assert "body_position" not in bp_components(converter, None)
    assert "blood_pressure_diastolic" in bp_components(converter, None)


def test_the_reference_worked_example_ids_to_the_character(converter):
    """Hand-computed with ``printf '%s' ... | sha256sum`` from the reference formulas (sections 3.5, 3.6, 1.6)."""
    (obs,) = converter.convert([heart_rate_message([72.0])]).observations
    patient = (
        "7e1afc37ab502d0a52f08dbdbe77b48e623118c5ce7dd7f2b42087008e55dc9c"  # sha256("_110248495921238986420")
    )
    device = "4ed3ed44148672b74127a424396eb64ff6e15ee9c3835bd200f0c33223b5a19f"  # sha256("_<sub>.com.google.android.gms")
    assert obs["identifier"][0]["value"] == (
        f"{patient}.{device}.derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
        ".20231114221320Z.20231114221320Z"
    )
    assert obs["id"] == "1e2e2c22897d5c8feb8f5ebbbea400163f65325f560bf80c0fb17da24d7ee1bf"
    assert obs["effectivePeriod"] == {
        "start": "2023-11-14T22:13:20.1240000Z",
        "end": "2023-11-14T22:13:20.1240000Z",
    }
    assert obs["issued"] == "1970-01-01T00:00:00.0000000+00:00"
    assert obs["valueQuantity"] == {"value": 72}
