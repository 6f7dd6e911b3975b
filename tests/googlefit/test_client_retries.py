"""What the client does when Google misbehaves: retry what can pass later, fail fast and clearly otherwise."""

from __future__ import annotations

import socket
from datetime import date

import pytest

from fitonfhir_dagster.googlefit.fit_client import day_window_ns
from fitonfhir_dagster.googlefit.fit_errors import (
    FitNotFound,
    FitPermissionDenied,
    FitRequestError,
    TransientFitError,
)
from fitonfhir_dagster.http.retry_schedule import RetrySchedule
from fitonfhir_dagster.settings import Settings

DAY = date(2025, 3, 2)
START, END = day_window_ns(DAY)
WEIGHT = "derived:com.google.weight:com.google.android.gms:merge_weight"
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


@pytest.fixture
def client(make_client, onboard):
    c = make_client(onboard())
    c.tokens.access_token()  # token endpoint out of the way: faults below target the Fit API
    return c


def test_429_is_retried_after_the_servers_retry_after(sandbox, client, sleep):
    expected = client.fetch_dataset_pages(HR_MERGED, START, END)
    sandbox.add_fault(path="/datasets/", status=429, retry_after=7, count=2)
    calls_before = client.stats.api_calls

    pages = client.fetch_dataset_pages(HR_MERGED, START, END)

    assert [p.dataset for p in pages] == [p.dataset for p in expected]
    assert len(sleep.calls) == 2 and all(s >= 7 for s in sleep.calls)
    assert client.stats.api_calls - calls_before == 3
    assert client.stats.retries == 2


def test_503_is_retried_with_growing_jittered_backoff(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", status=503, count=3)
    pages = client.fetch_dataset_pages(HR_MERGED, START, END)
    assert pages[0].points
    # RetrySchedule(base_delay=0.5, max_delay=4): the n-th wait lies in [b/2, b] with b = 0.5 * 2**n
    assert len(sleep.calls) == 3
    for n, waited in enumerate(sleep.calls):
        assert 0.25 * 2**n <= waited <= 0.5 * 2**n


def test_a_google_outage_ends_in_a_retryable_error_after_bounded_attempts(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", status=503, count=None)
    calls_before = client.stats.api_calls
    with pytest.raises(TransientFitError) as err:
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert err.value.retryable
    message = str(err.value)
    assert f"stream {WEIGHT!r} page 0" in message and "after 4 attempts" in message and "HTTP 503" in message
    assert client.stats.api_calls - calls_before == 4
    assert len(sleep.calls) == 3 and sleep.total <= 30


def test_a_retry_after_longer_than_the_wait_budget_is_not_slept(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", status=429, retry_after=3600, count=None)
    with pytest.raises(TransientFitError, match="HTTP 429"):
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert sleep.calls == []


def test_a_read_timeout_is_retried(sandbox, make_client, onboard, sleep):
    client = make_client(onboard(), timeout=0.5)
    client.tokens.access_token()
    sandbox.add_fault(path="/datasets/", delay=2.0, count=1)
    pages = client.fetch_dataset_pages(WEIGHT, START, END)
    assert pages and client.stats.retries >= 1


def test_connection_errors_are_retried_then_reported_as_retryable(settings, make_client, onboard, sleep):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = Settings.from_env(
        {
            "FITONFHIR_SANDBOX_URL": settings.sandbox_url,
            "FITONFHIR_GOOGLE_FIT_URL": f"http://127.0.0.1:{port}/fitness/v1/",
            "FITONFHIR_HOME": str(settings.home),
        }
    )
    client = make_client(onboard(), settings=nowhere)
    with pytest.raises(TransientFitError, match=r"listing data sources: .*after 4 attempts.*ConnectionError"):
        client.list_data_sources()
    assert len(sleep.calls) == 3


def test_403_is_not_retried_and_names_the_stream(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", status=403, count=1)
    with pytest.raises(FitPermissionDenied) as err:
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert not err.value.retryable
    assert f"stream {WEIGHT!r} page 0: Google denied access (403)" in str(err.value)
    assert "scopes" in str(err.value)
    assert sleep.calls == [] and client.stats.retries == 0


def test_404_for_an_unknown_stream_is_not_retried(client, sleep):
    stream = "derived:com.google.weight:com.example:gone"
    with pytest.raises(
        FitNotFound, match=rf"stream {stream!r} page 0: not found \(404\): DataSourceId not found"
    ):
        client.fetch_dataset_pages(stream, START, END)
    assert sleep.calls == []


def test_400_is_not_retried_and_carries_googles_message(sandbox, client, sleep):
    sandbox.add_fault(path="/datasets/", status=400, count=1)
    with pytest.raises(
        FitRequestError, match=r"rejected the request \(400\): Request failed \(sandbox fault\)"
    ):
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert sleep.calls == []


def test_an_inverted_range_is_refused_before_any_request(client):
    with pytest.raises(ValueError, match="starts after it ends"):
        client.fetch_dataset_pages(WEIGHT, END, START)


def test_retry_schedule_of_one_attempt_means_no_retry(sandbox, make_client, onboard, sleep):
    client = make_client(onboard(), retry_schedule=RetrySchedule(max_attempts=1))
    client.tokens.access_token()
    sandbox.add_fault(path="/datasets/", status=503, count=1)
    with pytest.raises(TransientFitError, match="after 1 attempts"):
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert sleep.calls == []
