"""Google's dataset wire format -> the Python shape the device messages need.

Google sends int64 fields as JSON strings; MedTech templates compute with them, so they become ints here.
Every other field is kept as received. The structure is validated on the way, so a bad page fails with a
message naming stream, page, point index and field, or (in collecting mode) only the bad points are set
aside with their reason and the good ones go on.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import orjson

from ..gc_pause import paused_gc
from .fit_errors import MalformedDataset, ResponseNotJson

DATASET_INT64_FIELDS = ("minStartTimeNs", "maxEndTimeNs")
POINT_OPTIONAL_INT64_FIELDS = ("modifiedTimeMillis", "computationTimeMillis", "rawTimestampNanos")

BadPointMode = Literal["raise", "collect"]


class BadPoint(NamedTuple):
    """A point that failed validation, exactly as Google sent it, and why."""

    point: Any
    reason: str


class _PointError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def _int64(value: Any) -> int | None:
    """Google's int64 (a decimal string, sometimes a JSON number) as int; None if it is not one."""
    kind = type(value)
    if kind is str:
        if value.isdigit() and value.isascii():  # the common case: Google's decimal string
            return int(value)
        if value[:1] == "-" and value[1:].isdigit() and value.isascii():
            return int(value)
        return None
    if kind is int:
        return int(value)
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _required_int64(point: dict[str, Any], name: str) -> int:
    raw = point.get(name)
    if type(raw) is str and raw.isdigit() and raw.isascii():  # fast path: Google's decimal string
        return int(raw)
    number = _int64(raw)
    if number is None:
        raise _PointError(name, _problem(point, name))
    return number


def _convert_point(point: Any) -> dict[str, Any]:
    """Validate one point and convert its int64 fields in place; raises _PointError before changing anything."""
    if type(point) is not dict:
        raise _PointError("point", f"expected an object, got {type(point).__name__}")
    start = _required_int64(point, "startTimeNanos")
    end = _required_int64(point, "endTimeNanos")
    if end < start:
        raise _PointError("endTimeNanos", f"ends ({end}) before it starts ({start})")
    updates: list[tuple[str, int]] = [("startTimeNanos", start), ("endTimeNanos", end)]
    for name in POINT_OPTIONAL_INT64_FIELDS:
        raw = point.get(name)
        if raw is not None:
            number = _int64(raw)
            if number is None:
                raise _PointError(name, f"not an int64: {_describe(raw)}")
            updates.append((name, number))
    values = point.get("value")
    if type(values) is not list:
        raise _PointError("value", _problem(point, "value", "a list"))
    int_fixes: list[tuple[dict[str, Any], int]] | None = None
    for i, value in enumerate(values):
        if type(value) is not dict:
            raise _PointError(f"value[{i}]", f"expected an object, got {type(value).__name__}")
        fp = value.get("fpVal")
        if fp is not None and type(fp) is not float and type(fp) is not int:
            raise _PointError(f"value[{i}].fpVal", f"not a number: {_describe(fp)}")
        iv = value.get("intVal")
        if iv is not None and type(iv) is not int:
            number = _int64(iv)
            if number is None:
                raise _PointError(f"value[{i}].intVal", f"not an integer: {_describe(iv)}")
            int_fixes = int_fixes or []
            int_fixes.append((value, number))
    point.update(updates)
    if int_fixes:
        for value, number in int_fixes:
            value["intVal"] = number
    return point


def _problem(point: dict[str, Any], name: str, expected: str = "an int64") -> str:
    if name not in point:
        return "missing"
    return f"expected {expected}, got {_describe(point[name])}"


def convert_dataset(
    dataset: Any, *, stream_id: str, page_index: int, mode: BadPointMode = "raise"
) -> tuple[dict[str, Any], list[BadPoint]]:
    """Validate a parsed dataset page and convert its int64 fields to ints (in place).

    ``mode="raise"``: the first bad point raises :class:`MalformedDataset`.
    ``mode="collect"``: bad points are removed from ``point`` and returned with their reason.
    A page-level defect (no ``point`` list, bad ``minStartTimeNs``) always raises.
    """
    where = f"stream {stream_id!r} page {page_index}"
    if type(dataset) is not dict:
        raise MalformedDataset(f"{where}: expected a dataset object, got {type(dataset).__name__}")
    for name in DATASET_INT64_FIELDS:
        raw = dataset.get(name)
        if raw is not None:
            number = _int64(raw)
            if number is None:
                raise MalformedDataset(f"{where}: field {name!r} is not an int64: {_describe(raw)}")
            dataset[name] = number
    points = dataset.get("point")
    if type(points) is not list:
        problem = "is missing" if "point" not in dataset else f"is not a list ({type(points).__name__})"
        raise MalformedDataset(f"{where}: field 'point' {problem}")
    good: list[dict[str, Any]] = []
    bad: list[BadPoint] = []
    for index, point in enumerate(points):
        try:
            good.append(_convert_point(point))
        except _PointError as exc:
            reason = f"{where} point {index} field {exc.field!r}: {exc.problem}"
            if mode == "raise":
                raise MalformedDataset(reason) from None
            bad.append(BadPoint(point, reason))
    if bad:
        dataset["point"] = good
    return dataset, bad


def parse_dataset(
    body: bytes, *, stream_id: str, page_index: int, mode: BadPointMode = "raise"
) -> tuple[dict[str, Any], list[BadPoint]]:
    """Parse a dataset response body (orjson) and convert it; invalid JSON raises ResponseNotJson."""
    with paused_gc():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ResponseNotJson(
                f"stream {stream_id!r} page {page_index}: response is not JSON ({exc})"
            ) from None
        return convert_dataset(parsed, stream_id=stream_id, page_index=page_index, mode=mode)


def supply_missing_fields(
    dataset: dict[str, Any], *, stream_id: str, start_ns: int, end_ns: int
) -> dict[str, int]:
    """Fill in fields Google left out that the request itself determines; returns {field: times supplied}.

    ``dataSourceId`` is the stream asked for and ``minStartTimeNs``/``maxEndTimeNs`` the requested
    window (Google echoes both); a point without ``dataTypeName`` gets the stream's data type (every
    point of a data source has its type). Nothing a reading itself carries is ever invented.
    """
    supplied: dict[str, int] = {}
    for name, value in (("dataSourceId", stream_id), ("minStartTimeNs", start_ns), ("maxEndTimeNs", end_ns)):
        if dataset.get(name) is None:
            dataset[name] = value
            supplied[name] = 1
    parts = stream_id.split(":")
    type_name = parts[1] if len(parts) > 1 else ""
    if type_name:
        missing = 0
        for point in dataset["point"]:
            if point.get("dataTypeName") is None:
                point["dataTypeName"] = type_name
                missing += 1
        if missing:
            supplied["point.dataTypeName"] = missing
    return supplied


def reading_identity(point: dict[str, Any]) -> tuple[int, int, bytes]:
    """What makes two points of one stream the same reading: start, end and values.

    For a parsed point of a stream already known (the client's pages): it ignores the data type and
    ``modifiedTimeMillis`` and requires the fields. Not to be confused with
    ``fitmapping.device_messages.fit_point_identity``, the user-wide key of the point accounting, which adds
    the stream id and data type (points of every stream are counted together) and tolerates archived points
    missing a field.
    """
    return (
        point["startTimeNanos"],
        point["endTimeNanos"],
        orjson.dumps(point["value"], option=orjson.OPT_SORT_KEYS),
    )
