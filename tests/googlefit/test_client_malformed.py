"""A broken page from Google fails with a message naming stream, page, point and field; or, in collecting
mode, only the bad points are set aside with their reasons."""

from __future__ import annotations

from datetime import date

import pytest

from fitonfhir_dagster.googlefit.fit_client import day_window_ns
from fitonfhir_dagster.googlefit.fit_errors import MalformedDataset

DAY = date(2025, 3, 4)
START, END = day_window_ns(DAY)
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
Q = repr(HR_MERGED)


@pytest.fixture
def client(make_client, onboard):
    c = make_client(onboard())
    c.tokens.access_token()
    return c


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("missing_fields", f"stream {Q} page 0 point 0 field 'endTimeNanos': missing"),
        ("bad_nanos", f"stream {Q} page 0 point 0 field 'startTimeNanos': expected an int64, got 'abc'"),
        ("wrong_value_type", f"stream {Q} page 0 point 0 field 'value[0].fpVal': not a number: '"),
        ("missing_value", f"stream {Q} page 0 point 0 field 'value': missing"),
    ],
)
def test_a_malformed_page_is_reported_precisely(sandbox, client, variant, message):
    sandbox.add_fault(path="/datasets/", malformed=variant, count=1)
    with pytest.raises(MalformedDataset) as err:
        client.fetch_dataset_pages(HR_MERGED, START, END, limit=40)
    assert str(err.value).startswith(message)
    assert not err.value.retryable


def test_the_page_number_is_the_one_that_was_broken(sandbox, client):
    sandbox.add_fault(path="/datasets/", delay=0, count=1)  # lets page 0 through untouched
    sandbox.add_fault(path="/datasets/", malformed="bad_nanos", count=1)
    with pytest.raises(MalformedDataset, match=rf"stream {Q} page 1 point 0 field 'startTimeNanos'"):
        client.fetch_dataset_pages(HR_MERGED, START, END, limit=40)


def test_collecting_mode_keeps_good_points_and_returns_bad_ones_with_reasons(sandbox, client):
    clean = client.fetch_day(DAY, [HR_MERGED], limit=40)
    sandbox.add_fault(path="/datasets/", delay=0, count=1)
    sandbox.add_fault(path="/datasets/", malformed="wrong_value_type", count=1)

    fetched = client.fetch_day(DAY, [HR_MERGED], limit=40, bad_points="collect")

    ((point, reason),) = fetched.bad_points
    assert reason.startswith(f"stream {Q} page 1 point 0 field 'value[0].fpVal': not a number")
    assert isinstance(point["value"][0]["fpVal"], str)  # the point as Google sent it, for a dead letter
    assert point["startTimeNanos"] == str(point["startTimeNanos"])  # not converted
    assert fetched.stats.bad_points == 1
    assert fetched.stats.points == clean.stats.points - 1
    assert fetched.pages[1].bad_points == [(point, reason)]


def test_collecting_mode_can_be_the_clients_default(sandbox, make_client, onboard):
    client = make_client(onboard(), bad_points="collect")
    sandbox.add_fault(path="/datasets/", malformed="missing_value", count=1)
    (page,) = client.fetch_dataset_pages(HR_MERGED, START, END)
    assert len(page.bad_points) == 1 and "field 'value': missing" in page.bad_points[0].reason
