"""Step 2: turn one archived user-day into MedTech device messages (NDJSON), optionally publish them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..sources import source_named
from ..stores.archive import object_name
from ..stores.users import GOOGLE_FIT
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
    return messages_from_source(stores, day, user_key, document, publisher)


def messages_from_source(
    stores: StepStores, day: str, user_key: str, document: dict[str, Any], publisher: Publisher | None
) -> MessagesSummary:
    """Device messages of an archived user-day, built by its source (Fit or Health), archived as NDJSON,
    published when configured, and checked to hold every fetched point exactly once."""
    source = source_named(document.get("source", GOOGLE_FIT))
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
    sent = source.message_point_identities(built)
    summary.missing_points = sum((fetched - sent).values())
    summary.duplicated_points = sum((sent - fetched).values())
    return summary
