"""Which streams are imported, and which nanosecond window one UTC day is."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from fitonfhir_dagster.googlefit import catalog
from fitonfhir_dagster.googlefit.fit_client import day_window_ns, select_streams
from fitonfhir_dagster.googlefit.fit_errors import MalformedResponse


def ids(sources):
    return [s["dataStreamId"] for s in sources]


def test_merged_policy_keeps_one_google_merged_stream_per_data_type():
    chosen = select_streams(catalog.sample_data_sources(), "merged")
    assert len(chosen) == 10
    assert all(catalog.is_merged_stream(i) for i in ids(chosen))
    assert sorted(s["dataType"]["name"] for s in chosen) == sorted(catalog.DATA_TYPE_NAMES)
    assert "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm" in ids(chosen)
    # derived but not merged: resting heart rate computed from the merge, estimated steps
    assert not any("resting_heart_rate" in i or i.endswith(":estimated_steps") for i in ids(chosen))


def test_all_policy_keeps_every_source():
    assert ids(select_streams(catalog.sample_data_sources(), "all")) == ids(catalog.sample_data_sources())


def test_data_types_filter_and_default_to_the_catalog():
    weight_only = select_streams(catalog.sample_data_sources(), "all", ["com.google.weight"])
    assert {s["dataType"]["name"] for s in weight_only} == {"com.google.weight"}
    assert len(weight_only) == 3
    unknown = {
        "dataStreamId": "derived:com.google.location.sample:com.google.android.gms:merge_location",
        "dataType": {"name": "com.google.location.sample"},
    }
    assert select_streams([unknown], "all") == []
    assert ids(select_streams([unknown], "all", ["com.google.location.sample"])) == [unknown["dataStreamId"]]


def test_the_type_comes_from_the_stream_id_when_the_source_lacks_it():
    source = {"dataStreamId": "derived:com.google.weight:com.google.android.gms:merge_weight"}
    assert select_streams([source], "merged") == [source]


def test_unknown_policy_and_sources_without_id_are_refused():
    with pytest.raises(ValueError, match="stream policy must be one of"):
        select_streams([], "raw")
    with pytest.raises(MalformedResponse, match="data source without a dataStreamId"):
        select_streams([{"dataType": {"name": "com.google.weight"}}], "all")


def test_a_day_window_runs_from_midnight_to_one_nanosecond_before_the_next_midnight():
    start, end = day_window_ns(date(2025, 1, 15))
    assert start == int(datetime(2025, 1, 15, tzinfo=UTC).timestamp()) * 10**9 == 1736899200000000000
    assert end == 1736985600000000000 - 1


def test_day_windows_tile_time_without_gaps_or_overlap():
    days = [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]  # leap day
    windows = [day_window_ns(d) for d in days]
    for (_, end), (next_start, _) in zip(windows, windows[1:], strict=False):
        assert next_start == end + 1
