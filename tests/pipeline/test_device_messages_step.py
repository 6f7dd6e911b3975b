"""The device_messages step: archived once per user-day, published to Event Hub in <= 1 MB batches."""

import orjson
import pytest

from fitonfhir_dagster.pipeline.datasets import datasets_object
from fitonfhir_dagster.pipeline.messages import build_user_day_messages, load_messages
from fitonfhir_dagster.pipeline.step_errors import UpstreamMissing
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.eventhub import EventHubPublisher
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault
from tests.support.eventhub import STANDARD_MAX_BATCH_BYTES, RecordingProducer

DAY = "2026-11-20"
START = 1_763_596_800_000_000_000
HR = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


@pytest.fixture
def stores(tmp_path):
    settings = Settings.from_env({"FITONFHIR_HOME": str(tmp_path)})
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    return StepStores(
        settings, users, LocalTokenVault(tmp_path / "vault"), LocalArchive(tmp_path / "archive")
    )


def _archive_day(stores, user, points_per_page, pages):
    def point(i):
        return {
            "dataTypeName": "com.google.heart_rate.bpm",
            "startTimeNanos": START + i * 1_000_000_000,
            "endTimeNanos": START + i * 1_000_000_000,
            "originDataSourceId": "raw:com.google.heart_rate.bpm:com.example.watch:" + "x" * 200,
            "value": [{"fpVal": 60.0 + i % 30, "mapVal": []}],
        }

    document = {
        "user": user.key,
        "date": DAY,
        "googleSub": user.google_sub,
        "window": {"startNs": START, "endNs": START + 86_400_000_000_000 - 1},
        "sources": [{"dataStreamId": HR, "application": {"packageName": "com.google.android.gms"}}],
        "pages": {
            HR: [
                {
                    "dataSourceId": HR,
                    "point": [point(p * points_per_page + i) for i in range(points_per_page)],
                }
                for p in range(pages)
            ]
        },
    }
    stores.archive.put(datasets_object(DAY, user.key), orjson.dumps(document))


def _user(stores):
    return stores.users.upsert_onboarded(google_sub="1234567890", google_issuer="https://x", patient_id="p-1")


def test_messages_are_published_exactly_once_in_batches_of_at_most_1_mb(stores):
    user = _user(stores)
    _archive_day(stores, user, points_per_page=1000, pages=12)  # ~0.35 MB a page
    producer = RecordingProducer()
    summary = build_user_day_messages(stores, DAY, user.key, EventHubPublisher(producer))
    sent = [body for batch in producer.sent for body in batch.bodies]
    archived = load_messages(stores, DAY, user.key)
    assert [orjson.loads(b) for b in sent] == archived
    assert summary.messages == len(sent) == 12 and summary.points == 12_000
    assert summary.batches == len(producer.sent) > 1
    assert all(batch.size_in_bytes <= STANDARD_MAX_BATCH_BYTES for batch in producer.sent)
    assert (summary.missing_points, summary.duplicated_points) == (0, 0)


def test_an_oversize_page_is_split_before_publishing_and_nothing_is_dropped(stores):
    user = _user(stores)
    _archive_day(stores, user, points_per_page=6000, pages=1)  # ~2 MB: larger than one event may be
    producer = RecordingProducer()
    summary = build_user_day_messages(stores, DAY, user.key, EventHubPublisher(producer))
    sent = [orjson.loads(body) for batch in producer.sent for body in batch.bodies]
    assert len(sent) > 1
    assert sum(len(m["point"]) for m in sent) == 6000 == summary.points
    assert (summary.missing_points, summary.duplicated_points) == (0, 0)


def test_rerunning_replaces_the_archived_messages_instead_of_appending(stores):
    user = _user(stores)
    _archive_day(stores, user, points_per_page=10, pages=2)
    build_user_day_messages(stores, DAY, user.key)
    build_user_day_messages(stores, DAY, user.key)
    assert len(load_messages(stores, DAY, user.key)) == 2


def test_a_user_day_without_archived_datasets_is_a_clear_error(stores):
    user = _user(stores)
    with pytest.raises(UpstreamMissing, match=f"{DAY}\\|{user.key}: no archived fit_datasets"):
        build_user_day_messages(stores, DAY, user.key)
