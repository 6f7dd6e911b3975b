"""Google Health v4 wire format: AIP-160 time filters, and data point pages checked and normalised.

int64 members (``beatsPerMinute``, ``count``, ``heightMillimeters``, ...) arrive as JSON strings and become
ints, as the Fit wire does, so MedTech templates can compute with them; everything else is kept as sent.
A bad point is set aside with a reason naming type, page, point index and field; the good ones go on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from .health_catalog import HealthType
from .health_errors import MalformedHealthResponse


class BadDataPoint(NamedTuple):
    point: Any
    reason: str


class NotJson(Exception):
    """A 200 body that does not parse (cut short in transit): the client fetches it again."""


def day_start(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def time_filter(health_type: HealthType, first_day: date, end_day: date) -> str:
    """The AIP-160 filter for points starting in ``[first_day, end_day)`` (UTC) on the type's time field."""
    field = health_type.time_field
    if health_type.kind == "daily":
        low, high = first_day.isoformat(), end_day.isoformat()
    else:
        low, high = day_start(first_day), day_start(end_day)
    return f'{field} >= "{low}" AND {field} < "{high}"'


def parse_time(text: Any) -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset) as an aware UTC datetime; ValueError otherwise."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without offset: {text!r}")
    return parsed.astimezone(UTC)


def _date(value: Any) -> date:
    if not isinstance(value, dict):
        raise ValueError(f"expected a Date object, got {type(value).__name__}")
    return date(int(value["year"]), int(value["month"]), int(value["day"]))


def start_day(health_type: HealthType, point: dict[str, Any]) -> date:
    """The UTC day a (checked) point belongs to: the day it starts in."""
    member = point[health_type.member]
    if health_type.kind == "daily":
        return _date(member["date"])
    if health_type.kind == "interval":
        return parse_time(member["interval"]["startTime"]).date()
    return parse_time(member["sampleTime"]["physicalTime"]).date()


def _int64(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and value.isascii():
        return int(value)
    return None


def _check_point(health_type: HealthType, point: Any) -> None:
    """Raise ValueError("field: problem") for a point we cannot import; converts int64 members in place."""
    if not isinstance(point, dict):
        raise ValueError(f"point: expected an object, got {type(point).__name__}")
    member = point.get(health_type.member)
    if not isinstance(member, dict):
        raise ValueError(f"{health_type.member}: missing (the point carries {sorted(point)})")
    name = health_type.member
    try:
        if health_type.kind == "interval":
            interval = member.get("interval") or {}
            start, end = parse_time(interval.get("startTime")), parse_time(interval.get("endTime"))
            if end < start:
                raise ValueError(f"{name}.interval: ends before it starts")
        elif health_type.kind == "sample":
            parse_time((member.get("sampleTime") or {}).get("physicalTime"))
        else:
            _date(member.get("date"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{name} time: {exc}") from None
    fixes = []
    for field in health_type.int64_fields:
        if field in member:
            number = _int64(member[field])
            if number is None:
                raise ValueError(f"{name}.{field}: not an int64: {member[field]!r}"[:160])
            fixes.append((field, number))
    value = member.get(health_type.value_field)
    if value is None:
        raise ValueError(f"{name}.{health_type.value_field}: missing")
    if health_type.value_field not in health_type.int64_fields and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise ValueError(f"{name}.{health_type.value_field}: not a number: {value!r}"[:160])
    for field, number in fixes:
        member[field] = number


def parse_page(
    body: bytes, health_type: HealthType, page_index: int
) -> tuple[list[dict[str, Any]], str, list[BadDataPoint]]:
    """(good points, nextPageToken or "", bad points) of a list or reconcile response body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise NotJson(f"{health_type.name} page {page_index}: response is not JSON ({exc})") from None
    where = f"{health_type.name} page {page_index}"
    if not isinstance(parsed, dict):
        raise MalformedHealthResponse(f"{where}: expected an object, got {type(parsed).__name__}")
    points = parsed.get("dataPoints", [])
    if not isinstance(points, list):
        raise MalformedHealthResponse(f"{where}: 'dataPoints' is not a list")
    token = parsed.get("nextPageToken") or ""
    if not isinstance(token, str):
        raise MalformedHealthResponse(f"{where}: 'nextPageToken' is not a string")
    good, bad = [], []
    for index, point in enumerate(points):
        try:
            _check_point(health_type, point)
        except ValueError as exc:
            bad.append(BadDataPoint(point, f"{where} point {index} {exc}"))
        else:
            good.append(point)
    return good, token, bad


def window_days(first_day: date, last_day: date) -> list[date]:
    if last_day < first_day:
        raise ValueError(f"window ends ({last_day}) before it starts ({first_day})")
    return [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
