"""Event Hub publishing, checked with the SDK's real EventDataBatch size accounting (Event Hubs has no
emulator; tests/support/eventhub.py records sent batches instead of opening an AMQP link)."""

from __future__ import annotations

import random

import pytest
from azure.eventhub import EventData, EventHubProducerClient

from fitonfhir_dagster.settings import ConfigError, Settings
from fitonfhir_dagster.stores.eventhub import (
    EventHubPublisher,
    EventTooLarge,
    PublishStats,
    fully_qualified_namespace,
)
from tests.support.eventhub import STANDARD_MAX_BATCH_BYTES, RecordingBatch, RecordingProducer


def page(index: int, size: int) -> bytes:
    """A device message of exactly ``size`` bytes that says which one it is."""
    head = f'{{"page":{index},"fill":"'.encode()
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_events_are_delivered_once_in_order_in_full_batches_of_at_most_1_mb() -> None:
    events = [page(i, 10_000) for i in range(300)]
    producer = RecordingProducer()

    stats = EventHubPublisher(producer).publish(iter(events))

    assert producer.delivered() == events
    assert stats == PublishStats(events=300, batches=len(producer.sent), bytes=300 * 10_000)
    assert stats.batches == 3  # 3 MB of payload: packed, not one batch per event
    assert all(b.size_in_bytes <= STANDARD_MAX_BATCH_BYTES == b.max_size_in_bytes for b in producer.sent)
    for sent, following in zip(producer.sent, producer.sent[1:], strict=False):
        full = RecordingBatch(max_size_in_bytes=STANDARD_MAX_BATCH_BYTES)
        for body in sent.bodies:
            full.add(EventData(body))
        with pytest.raises(ValueError):  # the next event really did not fit any more
            full.add(EventData(following.bodies[0]))


def test_mixed_sizes_up_to_nearly_the_limit_are_all_delivered_in_order() -> None:
    rng = random.Random(7)
    events = [page(i, rng.choice([50, 2_000, 90_000, 400_000])) for i in range(40)]
    events.insert(17, page(999, 1_048_000))  # fits alone, with AMQP framing, in a 1 MB batch
    producer = RecordingProducer()

    stats = EventHubPublisher(producer).publish(events)

    assert producer.delivered() == events
    assert stats.events == len(events) and stats.bytes == sum(map(len, events))
    assert all(b.size_in_bytes <= STANDARD_MAX_BATCH_BYTES for b in producer.sent)


def test_an_event_too_large_for_an_empty_batch_raises_with_its_size_after_sending_what_came_before() -> None:
    events = [page(0, 600_000), page(1, 600_000), page(2, 1_100_000), page(3, 100)]
    producer = RecordingProducer()

    with pytest.raises(EventTooLarge, match="event #2 is 1100000 bytes") as caught:
        EventHubPublisher(producer).publish(events)

    error = caught.value
    assert (error.size, error.index, error.max_batch_size) == (1_100_000, 2, STANDARD_MAX_BATCH_BYTES)
    assert error.published == PublishStats(events=2, batches=2, bytes=1_200_000)
    assert producer.delivered() == events[:2]  # nothing before it lost, nothing after it sent


def test_a_single_oversize_event_is_not_dropped_silently() -> None:
    producer = RecordingProducer()
    with pytest.raises(EventTooLarge) as caught:
        EventHubPublisher(producer).publish([page(0, STANDARD_MAX_BATCH_BYTES)])
    assert caught.value.published == PublishStats(0, 0, 0)
    assert producer.sent == []


def test_nothing_to_publish_sends_nothing() -> None:
    producer = RecordingProducer()
    assert EventHubPublisher(producer).publish([]) == PublishStats(0, 0, 0)
    assert producer.sent == [] and producer.created == 0


def test_a_smaller_batch_limit_can_be_configured() -> None:
    events = [page(i, 5_000) for i in range(50)]
    producer = RecordingProducer()

    stats = EventHubPublisher(producer, max_batch_bytes=64 * 1024).publish(events)

    assert producer.delivered() == events
    assert stats.batches == 4
    assert all(b.size_in_bytes <= 64 * 1024 == b.max_size_in_bytes for b in producer.sent)


def test_the_publisher_closes_its_producer() -> None:
    producer = RecordingProducer()
    with EventHubPublisher(producer) as publisher:
        publisher.publish([b"{}"])
    assert producer.closed


# -- configuration ----------------------------------------------------------------------------------

CONN = (
    "Endpoint=sb://fitonfhir-test.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0"
)


def settings(tmp_path, **env: str) -> Settings:
    return Settings.from_env({"FITONFHIR_HOME": str(tmp_path), **env})


def test_from_settings_with_a_connection_string_uses_the_configured_hub(tmp_path) -> None:
    with EventHubPublisher.from_settings(
        settings(tmp_path, FITONFHIR_EVENTHUB_CONNECTION_STRING=CONN, FITONFHIR_EVENTHUB_NAME="devices")
    ) as publisher:
        assert isinstance(publisher.producer, EventHubProducerClient)
        assert publisher.producer.eventhub_name == "devices"

    with EventHubPublisher.from_settings(
        settings(tmp_path, FITONFHIR_EVENTHUB_CONNECTION_STRING=CONN + ";EntityPath=ingest-2")
    ) as publisher:
        assert publisher.producer.eventhub_name == "ingest-2"


def test_from_settings_with_a_namespace_uses_azure_ad(tmp_path) -> None:
    with EventHubPublisher.from_settings(
        settings(tmp_path, FITONFHIR_EVENTHUB_NAMESPACE="fitonfhir-ns")
    ) as publisher:
        assert isinstance(publisher.producer, EventHubProducerClient)
        assert publisher.producer.eventhub_name == "ingest"


@pytest.mark.parametrize(
    "given", ["fitonfhir-ns", "fitonfhir-ns.servicebus.windows.net", "sb://fitonfhir-ns/"]
)
def test_a_short_namespace_name_is_completed(given: str) -> None:
    assert fully_qualified_namespace(given) == "fitonfhir-ns.servicebus.windows.net"


def test_from_settings_without_event_hub_configuration_names_the_variables(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match="FITONFHIR_EVENTHUB_CONNECTION_STRING or FITONFHIR_EVENTHUB_NAMESPACE"
    ):
        EventHubPublisher.from_settings(settings(tmp_path))
