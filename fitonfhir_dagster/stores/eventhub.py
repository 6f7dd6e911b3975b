"""Send device messages to Azure Event Hubs (MedTech's ingest hub), packed into as few batches as fit.

Unlike the original, which sent one page per batch and silently dropped a page that did not fit, every
event is delivered or the call fails: an event too large for even an empty batch raises
:class:`EventTooLarge` (the caller splits the page and publishes the rest). Events are sent in order;
delivery is at-least-once (a failed send fails the run, and a re-run may send a batch again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from azure.eventhub import EventData, EventDataBatch

from ..settings import ConfigError, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishStats:
    events: int
    batches: int
    bytes: int  # sum of event bodies (payload bytes, without AMQP framing)


class EventTooLarge(ValueError):
    """One event is larger than an empty batch can hold; everything before it has been sent."""

    def __init__(self, *, size: int, max_batch_size: int, index: int, published: PublishStats) -> None:
        self.size = size
        self.max_batch_size = max_batch_size
        self.index = index
        self.published = published
        super().__init__(
            f"event #{index} is {size} bytes and does not fit into an empty Event Hub batch "
            f"(max {max_batch_size} bytes including AMQP framing); split it before publishing. "
            f"The {published.events} events before it were sent."
        )


class BatchProducer(Protocol):
    """What the publisher needs of ``EventHubProducerClient``."""

    def create_batch(self, **kwargs: Any) -> EventDataBatch: ...

    def send_batch(self, event_data_batch: EventDataBatch, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def fully_qualified_namespace(namespace: str) -> str:
    """Accept ``myns`` as well as ``myns.servicebus.windows.net`` (other clouds: give the full name)."""
    namespace = namespace.strip().removeprefix("sb://").rstrip("/")
    return namespace if "." in namespace else namespace + ".servicebus.windows.net"


class EventHubPublisher:
    def __init__(self, producer: BatchProducer, *, max_batch_bytes: int | None = None) -> None:
        """``max_batch_bytes`` None = the hub's own limit (1 MB on Standard)."""
        self.producer = producer
        self._batch_options: dict[str, Any] = {}
        if max_batch_bytes is not None:
            self._batch_options["max_size_in_bytes"] = max_batch_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> EventHubPublisher:
        """FITONFHIR_EVENTHUB_CONNECTION_STRING, else FITONFHIR_EVENTHUB_NAMESPACE + DefaultAzureCredential;
        hub FITONFHIR_EVENTHUB_NAME (unless the connection string names it with EntityPath)."""
        from azure.eventhub import EventHubProducerClient

        if settings.eventhub_connection_string:
            conn = settings.eventhub_connection_string
            if "entitypath=" in conn.lower():
                return cls(EventHubProducerClient.from_connection_string(conn))
            return cls(
                EventHubProducerClient.from_connection_string(conn, eventhub_name=settings.eventhub_name)
            )
        if not settings.eventhub_namespace:
            raise ConfigError(
                "Event Hubs is not configured: set FITONFHIR_EVENTHUB_CONNECTION_STRING "
                "or FITONFHIR_EVENTHUB_NAMESPACE"
            )
        from azure.identity import DefaultAzureCredential

        return cls(
            EventHubProducerClient(
                fully_qualified_namespace=fully_qualified_namespace(settings.eventhub_namespace),
                eventhub_name=settings.eventhub_name,
                credential=DefaultAzureCredential(),
            )
        )

    def publish(self, events: Iterable[bytes]) -> PublishStats:
        """Send every event, in order, in as few batches as fit. Raises EventTooLarge (see module doc)."""
        sent = PublishStats(0, 0, 0)
        batch: EventDataBatch | None = None
        batch_bytes = 0
        for index, body in enumerate(events):
            event = EventData(body)
            if batch is not None and _try_add(batch, event):
                batch_bytes += len(body)
                continue
            if batch is not None:
                sent = self._send(batch, batch_bytes, sent)
            batch = self.producer.create_batch(**self._batch_options)
            if not _try_add(batch, event):
                raise EventTooLarge(
                    size=len(body), max_batch_size=batch.max_size_in_bytes, index=index, published=sent
                )
            batch_bytes = len(body)
        if batch is not None:
            sent = self._send(batch, batch_bytes, sent)
        log.debug("published %d events in %d batches (%d bytes)", sent.events, sent.batches, sent.bytes)
        return sent

    def _send(self, batch: EventDataBatch, batch_bytes: int, sent: PublishStats) -> PublishStats:
        self.producer.send_batch(batch)
        return PublishStats(sent.events + len(batch), sent.batches + 1, sent.bytes + batch_bytes)

    def close(self) -> None:
        self.producer.close()

    def __enter__(self) -> EventHubPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _try_add(batch: EventDataBatch, event: EventData) -> bool:
    try:
        batch.add(event)
    except ValueError:  # the SDK's "batch is full" signal
        return False
    return True
