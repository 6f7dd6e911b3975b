"""Reading datasets from the sandbox over HTTP: sources, paging, int64 conversion, day windows."""

from __future__ import annotations

from datetime import date, timedelta

from fitonfhir_dagster.googlefit import catalog
from fitonfhir_dagster.googlefit.fit_client import day_window_ns
from fitonfhir_dagster.googlefit.wire import reading_identity

DAY = date(2025, 3, 1)
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
STEPS_MERGED = "derived:com.google.step_count.delta:com.google.android.gms:merge_step_deltas"


def identities(pages):
    return [reading_identity(p) for page in pages for p in page.points]


def test_data_sources_are_listed_and_the_merged_policy_picks_one_stream_per_type(make_client, onboard):
    client = make_client(onboard())
    sources = client.list_data_sources()
    assert len(sources) >= 30
    assert all("dataStreamId" in s and "dataType" in s for s in sources)
    merged = client.select_streams(sources)  # settings default: merged, every catalog type
    assert sorted(s["dataType"]["name"] for s in merged) == sorted(catalog.DATA_TYPE_NAMES)
    assert client.select_streams(sources, "all") == sources


def test_a_small_limit_pages_newest_first_and_the_pages_add_up_to_the_whole_dataset(make_client, onboard):
    client = make_client(onboard())
    start, end = day_window_ns(DAY)
    whole = client.fetch_dataset_pages(HR_MERGED, start, end, limit=100_000)
    assert len(whole) == 1
    total = len(whole[0].points)
    assert total > 120

    pages = client.fetch_dataset_pages(HR_MERGED, start, end, limit=50)

    assert len(pages) == -(-total // 50)
    assert [p.page_index for p in pages] == list(range(len(pages)))
    assert all(len(p.points) == 50 for p in pages[:-1])
    assert sorted(identities(pages)) == sorted(identities(whole))
    assert len(set(identities(pages))) == total
    for newer, older in zip(pages, pages[1:], strict=False):  # page 0 holds the newest points
        assert max(p["startTimeNanos"] for p in older.points) <= min(
            p["startTimeNanos"] for p in newer.points
        )
    assert "nextPageToken" in pages[0].dataset and "nextPageToken" not in pages[-1].dataset


def test_int64_fields_arrive_as_ints(make_client, onboard):
    client = make_client(onboard())
    start, end = day_window_ns(DAY)
    (page,) = client.fetch_dataset_pages(STEPS_MERGED, start, end)
    assert page.dataset["minStartTimeNs"] == start and page.dataset["maxEndTimeNs"] == end
    assert page.dataset["dataSourceId"] == STEPS_MERGED
    point = page.points[0]
    for name in ("startTimeNanos", "endTimeNanos", "modifiedTimeMillis"):
        assert type(point[name]) is int
    assert point["endTimeNanos"] > point["startTimeNanos"]  # step deltas are intervals
    assert type(point["value"][0]["intVal"]) is int
    assert point["dataTypeName"] == "com.google.step_count.delta"
    assert page.size_bytes > 0


def test_stream_ids_with_colons_and_arrows_are_path_quoted(make_client, onboard):
    client = make_client(onboard())
    resting = next(
        s["dataStreamId"]
        for s in client.list_data_sources()
        if "resting_heart_rate<-merge" in s["dataStreamId"]
    )
    start, end = day_window_ns(DAY)
    (page,) = client.fetch_dataset_pages(resting, start, end)
    assert page.dataset["dataSourceId"] == resting
    assert len(page.points) == 1


def test_fetch_day_returns_every_selected_stream_with_counters(make_client, onboard):
    client = make_client(onboard())
    streams = client.select_streams(client.list_data_sources())
    fetched = client.fetch_day(DAY, streams, limit=100)
    assert list(fetched.streams) == [s["dataStreamId"] for s in streams]
    assert (fetched.start_ns, fetched.end_ns) == day_window_ns(DAY)
    stats = fetched.stats
    assert stats.points == sum(len(p.points) for p in fetched.pages) > 300
    assert stats.pages >= len(streams) + 2  # heart rate and steps need several pages of 100
    assert stats.api_calls == stats.pages
    assert stats.bytes >= sum(p.size_bytes for p in fetched.pages)  # empty pages are dropped, not their bytes
    assert stats.retries == stats.bad_points == stats.duplicates == 0
    assert len(fetched.streams[HR_MERGED]) > 1


def test_consecutive_days_split_the_data_without_loss_or_overlap(make_client, onboard):
    """A point belongs to the UTC day it starts in: two day fetches == one two-day fetch, no point twice."""
    client = make_client(onboard())
    second = DAY + timedelta(days=1)
    for stream in (HR_MERGED, STEPS_MERGED):
        first_day = client.fetch_day(DAY, [stream], limit=60)
        second_day = client.fetch_day(second, [stream], limit=60)
        both = client.fetch_dataset_pages(stream, day_window_ns(DAY)[0], day_window_ns(second)[1], limit=1000)
        a, b = set(identities(first_day.pages)), set(identities(second_day.pages))
        assert a and b and not a & b
        assert a | b == set(identities(both))
        assert all(day_window_ns(DAY)[0] <= start <= day_window_ns(DAY)[1] for start, _, _ in a)
