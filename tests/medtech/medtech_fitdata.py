"""Synthetic device messages in the original's format (reference section 5.9), built from dataSources.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "original-fit-on-fhir"
SUB = "110248495921238986420"
IOMT = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"
# 2023-11-14T22:13:20.123456789Z, the reference's timestamp example (-> ...20.1240000Z).
T0_NS = 1700000000123456789


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text("utf-8")


def fixture_json(name: str) -> Any:
    return json.loads(fixture_text(name))


def data_sources() -> list[dict[str, Any]]:
    return list(fixture_json("dataSources.json")["dataSource"])


def device_identifier(source: dict[str, Any], sub: str = SUB) -> str:
    parts = [sub]
    package = (source.get("application") or {}).get("packageName")
    uid = (source.get("device") or {}).get("uid")
    parts += [p for p in (package, uid) if p]
    return ".".join(parts)


def value_entry(fmt: str, value: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"fpVal": None, "intVal": None, "mapVal": [], "stringVal": None, "ETag": None}
    entry[{"floatPoint": "fpVal", "integer": "intVal", "string": "stringVal"}[fmt]] = value
    return entry


def point(data_type: str, end_ns: int, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "computationTimeMillis": None,
        "dataTypeName": data_type,
        "endTimeNanos": end_ns,
        "modifiedTimeMillis": 1627675845579,
        "originDataSourceId": None,
        "rawTimestampNanos": None,
        "startTimeNanos": end_ns - 1_000_000_000,
        "value": values,
        "ETag": None,
    }


def sample_values(source: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One value per field: floats 60.5+seed.., optional integers (enums: 1, then 0, in range for every enum)."""
    out = []
    for i, f in enumerate(source["dataType"]["field"]):
        if f["format"] == "floatPoint":
            out.append(value_entry("floatPoint", 60.5 + seed + i))
        else:
            out.append(value_entry("integer", 1 - seed % 2 if f.get("optional") else 100 + seed))
    return out


def message(
    source: dict[str, Any], points: list[dict[str, Any]], sub: str = SUB, device: str | None = None
) -> dict[str, Any]:
    ends = [p["endTimeNanos"] for p in points] or [0]
    return {
        "dataSourceId": source["dataStreamId"],
        "maxEndTimeNs": max(ends),
        "minStartTimeNs": min(ends),
        "nextPageToken": None,
        "point": points,
        "ETag": None,
        "patientIdentifier": sub,
        "deviceIdentifier": device or device_identifier(source, sub),
    }


def source_by_stream(stream_id: str) -> dict[str, Any]:
    return next(s for s in data_sources() if s["dataStreamId"] == stream_id)


def heart_rate_message(
    bpms: list[float], start_ns: int = T0_NS, step_ns: int = 1_000_000_000
) -> dict[str, Any]:
    source = source_by_stream("derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm")
    points = [
        point("com.google.heart_rate.bpm", start_ns + i * step_ns, [value_entry("floatPoint", bpm)])
        for i, bpm in enumerate(bpms)
    ]
    return message(source, points)
