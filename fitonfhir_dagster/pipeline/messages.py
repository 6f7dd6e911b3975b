"""Step 2: turn one archived user-day into MedTech device messages (NDJSON), optionally publish them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..sources import source_named
from ..stores.archive import object_name
from ..stores.users import GOOGLE_FIT
from .datasets import datasets_object
from .day_document import read_document
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
    lines = stores.archive.get_lines(datasets_object(day, user_key))
    if lines is None:
        raise UpstreamMissing(
            user_key, day, "no archived fit_datasets for this user-day; materialize fit_datasets first"
        )
    header, pages = read_document(lines)
    return _messages(stores, day, user_key, header, pages, publisher)


def messages_from_source(
    stores: StepStores, day: str, user_key: str, document: dict[str, Any], publisher: Publisher | None
) -> MessagesSummary:
    """Device messages of an archived user-day, built by its source (Fit or Health), archived as NDJSON,
    published when configured, and checked to hold every fetched point exactly once."""
    header = {k: v for k, v in document.items() if k != "pages"}
    pages = ((stream, page) for stream, stream_pages in document["pages"].items() for page in stream_pages)
    return _messages(stores, day, user_key, header, pages, publisher)


SPOOL_IN_MEMORY = 1 << 20  # bytes of a day's messages kept in memory; beyond that, a temp file


def _messages(
    stores: StepStores,
    day: str,
    user_key: str,
    header: dict[str, Any],
    pages: Iterable[tuple[str, dict[str, Any]]],
    publisher: Publisher | None,
) -> MessagesSummary:
    """One page at a time: the page's messages (by its source), spooled, and the page's points checked
    against its messages (each message is built from one page, so a point in no message, in two, or in
    the message of another page is counted). Then the spool is archived and published."""
    source = source_named(header.get("source", GOOGLE_FIT))
    user = stores.users.get(user_key)
    google_sub = user.google_sub if user else header["googleSub"]
    summary = MessagesSummary(user_key=user_key, day=day)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        for stream, page in pages:
            view = {**header, "pages": {stream: [page]}}
            built = source.device_messages(view, google_sub)
            for message in built:
                spool.write(message.body)
                spool.write(b"\n")
                summary.bytes += len(message.body) + 1
            summary.messages += len(built)
            summary.points += sum(m.points for m in built)
            fetched = source.point_identities(view)
            sent = source.message_point_identities(built)
            summary.missing_points += sum((fetched - sent).values())
            summary.duplicated_points += sum((sent - fetched).values())
            del view, built, fetched, sent, page
        spool.seek(0)
        stores.archive.put_chunks(messages_object(day, user_key), iter(lambda: spool.read(1 << 20), b""))
        if publisher is not None and summary.messages:
            spool.seek(0)
            stats = publisher.publish(line.rstrip(b"\n") for line in spool)
            summary.batches = int(getattr(stats, "batches", 0))
            summary.published = True
    return summary
