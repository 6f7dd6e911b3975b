"""Step 2: turn one archived user-day into MedTech device messages (NDJSON), optionally publish them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..fitmapping.device_messages import build_device_messages, fit_point_identity
from ..sources import source_named
from ..stores.archive import object_name
from .datasets import load_datasets
from .step_errors import UpstreamMissing
from .step_stores import StepStores

KIND = "device_messages"
OBJECT = "messages.ndjson"


class Publisher(Protocol):
    def publish(self, events: Any) -> Any: ...


@dataclass
class MessagesSummary:
    user_key: str
    day: str
    messages: int = 0
    points: int = 0
    bytes: int = 0
    batches: int = 0
    published: bool = False
    missing_points: int = 0  # fetched but in no message
    duplicated_points: int = 0  # in more than one message, or not fetched at all


def messages_object(day: str, user_key: str) -> str:
    return object_name(KIND, day, user_key, OBJECT)


def load_messages(stores: StepStores, day: str, user_key: str) -> list[dict[str, Any]] | None:
    raw = stores.archive.get(messages_object(day, user_key))
    if raw is None:
        return None
    return [orjson.loads(line) for line in raw.splitlines() if line]


def build_user_day_messages(
    stores: StepStores, day: str, user_key: str, publisher: Publisher | None = None
) -> MessagesSummary:
    document = load_datasets(stores, day, user_key)
    if document is None:
        raise UpstreamMissing(
            user_key, day, "no archived fit_datasets for this user-day; materialize fit_datasets first"
        )
    if document.get("source", "google-fit") != "google-fit":  # issue 13: a day from another source
        return messages_from_source(stores, day, user_key, document, publisher)
    summary = MessagesSummary(user_key=user_key, day=day)
    user = stores.users.get(user_key)
    google_sub = user.google_sub if user else document["googleSub"]
    sources = {s["dataStreamId"]: s for s in document["sources"]}
    bodies: list[bytes] = []
    streams: list[str] = []
    for stream_id, pages in document["pages"].items():
        source = sources.get(stream_id, {"dataStreamId": stream_id})
        for message in build_device_messages(google_sub, source, pages):
            bodies.append(message.body)
            streams.append(message.data_source_id)
            summary.points += message.points
    payload = b"\n".join(bodies) + (b"\n" if bodies else b"")
    stores.archive.put(messages_object(day, user_key), payload)
    summary.messages = len(bodies)
    summary.bytes = len(payload)
    if publisher is not None and bodies:
        stats = publisher.publish(bodies)
        summary.batches = int(getattr(stats, "batches", 0))
        summary.published = True
    missing, duplicated = verify_exactly_once(document, [orjson.loads(b) for b in bodies], streams)
    summary.missing_points, summary.duplicated_points = missing, duplicated
    return summary


def verify_exactly_once(
    document: dict[str, Any], messages: list[dict[str, Any]], streams: Sequence[str] | None = None
) -> tuple[int, int]:
    """Count fetched points found in no message, and message points that are extra (duplicated or invented).

    ``streams[i]`` is the stream message ``i`` was built from; without it the message's own
    ``dataSourceId`` is used (a message without one counts as another stream, never a crash).
    """
    fetched: Counter[tuple] = Counter()
    for stream_id, pages in document["pages"].items():
        for page in pages:
            for point in page.get("point", []):
                fetched[fit_point_identity(stream_id, point)] += 1
    sent: Counter[tuple] = Counter()
    for i, message in enumerate(messages):
        stream = streams[i] if streams is not None else str(message.get("dataSourceId"))
        for point in message.get("point", []):
            sent[fit_point_identity(stream, point)] += 1
    missing = sum((fetched - sent).values())
    extra = sum((sent - fetched).values())
    return missing, extra


def messages_from_source(
    stores: StepStores, day: str, user_key: str, document: dict[str, Any], publisher: Publisher | None
) -> MessagesSummary:
    """Device messages of an archived non-Fit user-day, checked to hold every point exactly once."""
    source = source_named(document["source"])
    user = stores.users.get(user_key)
    google_sub = user.google_sub if user else document["googleSub"]
    built = source.device_messages(document, google_sub)
    bodies = [m.body for m in built]
    payload = b"\n".join(bodies) + (b"\n" if bodies else b"")
    stores.archive.put(messages_object(day, user_key), payload)
    summary = MessagesSummary(user_key=user_key, day=day, messages=len(bodies), bytes=len(payload))
    summary.points = sum(m.points for m in built)
    if publisher is not None and bodies:
        stats = publisher.publish(bodies)
        summary.batches = int(getattr(stats, "batches", 0))
        summary.published = True
    fetched = source.point_identities(document)
    sent = source.message_point_identities([orjson.loads(b) for b in bodies])
    summary.missing_points = sum((fetched - sent).values())
    summary.duplicated_points = sum((sent - fetched).values())
    return summary
