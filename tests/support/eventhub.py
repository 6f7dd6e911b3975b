"""An Event Hub producer stand-in built from the SDK's real ``EventDataBatch`` (Event Hubs has no emulator).

``create_batch`` returns a real ``EventDataBatch`` (real AMQP size accounting, 1 MB like a Standard hub);
``send_batch`` records what was sent instead of opening an AMQP link. The batch subclass only remembers
the bodies the SDK accepted, so tests can check order and exactly-once delivery through public API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from azure.eventhub import EventData, EventDataBatch

STANDARD_MAX_BATCH_BYTES = 1024 * 1024


class RecordingBatch(EventDataBatch):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[bytes] = []

    def add(self, event_data: EventData) -> None:  # type: ignore[override]
        super().add(event_data)  # raises ValueError when full: nothing recorded then
        self.bodies.append(b"".join(event_data.body))


@dataclass
class SentBatch:
    bodies: list[bytes]
    size_in_bytes: int
    max_size_in_bytes: int


@dataclass
class RecordingProducer:
    """Implements what ``EventHubPublisher`` uses of ``EventHubProducerClient``."""

    max_size_in_bytes: int = STANDARD_MAX_BATCH_BYTES
    sent: list[SentBatch] = field(default_factory=list)
    created: int = 0
    closed: bool = False

    def create_batch(self, **kwargs: Any) -> RecordingBatch:
        self.created += 1
        return RecordingBatch(max_size_in_bytes=kwargs.get("max_size_in_bytes") or self.max_size_in_bytes)

    def send_batch(self, event_data_batch: EventDataBatch, **kwargs: Any) -> None:
        assert isinstance(event_data_batch, RecordingBatch)
        self.sent.append(
            SentBatch(
                list(event_data_batch.bodies),
                event_data_batch.size_in_bytes,
                event_data_batch.max_size_in_bytes,
            )
        )

    def close(self) -> None:
        self.closed = True

    def delivered(self) -> list[bytes]:
        return [body for batch in self.sent for body in batch.bodies]
