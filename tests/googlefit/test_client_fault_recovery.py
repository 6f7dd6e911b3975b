"""Faults that used to lose a day: a page without the fields the request determines, a body cut short."""

from __future__ import annotations

from datetime import date

import pytest

from fitonfhir_dagster.googlefit.fit_client import day_window_ns
from fitonfhir_dagster.googlefit.fit_errors import TransientFitError

DAY = date(2025, 3, 4)
START, END = day_window_ns(DAY)
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


@pytest.fixture
def client(make_client, onboard):
    c = make_client(onboard(), bad_points="collect")
    c.tokens.access_token()
    return c


def test_fields_google_left_out_are_supplied_from_the_request_and_counted(sandbox, client):
    clean = client.fetch_day(DAY, [HR_MERGED], limit=40)
    sandbox.add_fault(path="/datasets/", malformed="missing_fields", count=1)

    fetched = client.fetch_day(DAY, [HR_MERGED], limit=40)

    first = fetched.pages[0]
    assert first.dataset["dataSourceId"] == HR_MERGED
    assert (first.dataset["minStartTimeNs"], first.dataset["maxEndTimeNs"]) == (START, END)
    assert first.supplied_fields == {"dataSourceId": 1, "minStartTimeNs": 1, "maxEndTimeNs": 1}
    assert fetched.stats.supplied_fields == 3
    # An end time only the reading knows cannot be supplied: that point is a bad point with its reason.
    ((point, reason),) = fetched.bad_points
    assert "endTimeNanos" not in point
    assert reason.endswith("point 0 field 'endTimeNanos': missing")
    assert fetched.stats.points == clean.stats.points - 1
    assert all(p.supplied_fields == {} for p in fetched.pages[1:])


def test_a_body_cut_short_once_is_fetched_again_and_the_day_is_complete(sandbox, client):
    clean = client.fetch_day(DAY, [HR_MERGED], limit=40)
    sandbox.add_fault(path="/datasets/", malformed="not_json", count=1)

    fetched = client.fetch_day(DAY, [HR_MERGED], limit=40)

    assert fetched.stats.retries == 1
    assert fetched.stats.points == clean.stats.points and fetched.bad_points == []
    assert [p.dataset for p in fetched.pages] == [p.dataset for p in clean.pages]


def test_a_body_that_never_parses_is_a_retryable_error_after_bounded_retries(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", malformed="not_json", count=None)

    with pytest.raises(TransientFitError, match=r"page 0: .* after 4 attempts .*unreadable body") as err:
        client.fetch_day(DAY, [HR_MERGED], limit=40)

    assert err.value.retryable
    assert len(sleep.calls) == 3  # max_attempts=4 in the test client's policy
