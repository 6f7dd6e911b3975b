"""MedTech device messages: one Google dataset page plus the patient and device identifiers.

The contract (DESIGN section 6) is the original's event: Google's dataset JSON with int64 fields as JSON
numbers, ``patientIdentifier`` = Google ``sub`` and ``deviceIdentifier`` = ``<sub>.<package>.<deviceUid>``.
Two defects are fixed here: a source with neither package nor device uid gets a stable fallback device id
instead of failing the stream, and a page too large for one Event Hub event is split, never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# Event Hubs Standard allows 1 MiB per batch; leave room for the AMQP envelope of one event.
MAX_MESSAGE_BYTES = 1_000_000


def device_identifier(google_sub: str, source: Mapping[str, Any]) -> str:
    """``<sub>.<applicationPackageName>.<deviceUid>`` with empty parts left out.

    A source with neither part (e.g. one created through the REST API) gets ``<sub>.stream-<hash>``,
    stable per data stream, so its data still reaches FHIR under a device of its own.
    """
    package = ((source.get("application") or {}).get("packageName") or "").strip()
    uid = ((source.get("device") or {}).get("uid") or "").strip()
    parts = [google_sub] + [p for p in (package, uid) if p]
    if len(parts) == 1:
        stream = str(source.get("dataStreamId", ""))
        parts.append("stream-" + hashlib.sha256(stream.encode()).hexdigest()[:16])
    return ".".join(parts)


@dataclass(frozen=True)
class DeviceMessage:
    """One serialised device message and what it carries."""

    body: bytes
    data_source_id: str
    points: int


def _encode(page: Mapping[str, Any], points: Sequence[Any], patient: str, device: str) -> bytes:
    message = {k: v for k, v in page.items() if k != "point"}
    message["point"] = points
    message["patientIdentifier"] = patient
    message["deviceIdentifier"] = device
    return orjson.dumps(message)


def _split(
    page: Mapping[str, Any], points: Sequence[Any], patient: str, device: str, max_bytes: int
) -> Iterator[tuple[bytes, int]]:
    body = _encode(page, points, patient, device)
    if len(body) <= max_bytes or len(points) <= 1:
        if len(body) > max_bytes:
            raise ValueError(
                f"one point of {page.get('dataSourceId')} serialises to {len(body)} bytes,"
                f" more than the {max_bytes}-byte message limit"
            )
        yield body, len(points)
        return
    parts = -(-len(body) // max_bytes) + 1
    size = -(-len(points) // parts)
    for start in range(0, len(points), size):
        yield from _split(page, points[start : start + size], patient, device, max_bytes)


def build_device_messages(
    google_sub: str,
    source: Mapping[str, Any],
    pages: Iterable[Mapping[str, Any]],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[DeviceMessage]:
    """One message per non-empty page; an oversize page becomes several messages with disjoint points."""
    device = device_identifier(google_sub, source)
    stream = str(source.get("dataStreamId", ""))
    messages: list[DeviceMessage] = []
    for page in pages:
        points = page.get("point") or []
        if not points:
            continue
        if len(points) * 48 < max_bytes:  # far below the limit: one message, no size check needed
            body = _encode(page, points, google_sub, device)
            if len(body) <= max_bytes:
                messages.append(DeviceMessage(body, stream, len(points)))
                continue
        for body, count in _split(page, points, google_sub, device, max_bytes):
            messages.append(DeviceMessage(body, stream, count))
    return messages


def fit_point_identity(stream_id: str, point: Mapping[str, Any]) -> tuple:
    """What makes a point unique within a user: its stream, data type, interval and values.

    The key of the point accounting (fetched vs sent, over all of a user's streams at once), so it names
    the stream and tolerates archived points missing a field; ``googlefit.wire.reading_identity`` is the
    narrower "same reading within one stream" of parsed points.
    """
    return (
        stream_id,
        point.get("dataTypeName"),
        point.get("startTimeNanos"),
        point.get("endTimeNanos"),
        # text, not bytes: a short result of orjson.dumps keeps a 4 KB buffer (a heavy page: 1000 keys)
        orjson.dumps(point.get("value"), option=orjson.OPT_SORT_KEYS).decode(),
    )
