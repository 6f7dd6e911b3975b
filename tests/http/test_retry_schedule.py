"""Retry decisions: what is retried, how long we wait, and that every loop ends."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from fitonfhir_dagster.http.retry_schedule import RetrySchedule, is_retryable_status, parse_retry_after
from tests.support.randomness import FixedRandom


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_server_errors_and_timeouts_are_retried(status):
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413])
def test_client_errors_are_never_retried_blindly(status):
    assert not is_retryable_status(status)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_retry_after_in_seconds(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_http_date():
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=lambda: now) == 30.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now=lambda: now) == 0.0


def test_retry_after_accepts_an_http_date():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(later, now=lambda: now) == 42
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_jitter_stays_within_half_to_full_delay_and_is_capped():
    low = RetrySchedule(base_delay=1, max_delay=4, rng=FixedRandom(0.0))
    high = RetrySchedule(base_delay=1, max_delay=4, rng=FixedRandom(0.999))
    assert [low.backoff(n - 1) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert all(d < 4 for d in (high.backoff(n - 1) for n in range(1, 8)))


def test_a_capped_retry_after_is_waited_only_up_to_its_cap():
    budget = RetrySchedule(max_retry_after=10, rng=FixedRandom(0.0)).budget()
    assert budget.next_delay(retry_after=600) == 10


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetrySchedule(base_delay=1.0, max_delay=8.0, rng=random.Random(7))
    for n, ceiling in enumerate([1, 2, 4, 8, 8, 8]):
        for _ in range(50):
            delay = policy.backoff(n)
            assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_delays():
    policy = RetrySchedule(base_delay=4.0, rng=random.Random(1))
    assert len({round(policy.backoff(0), 6) for _ in range(20)}) > 10


def test_attempts_are_bounded():
    budget = RetrySchedule(max_attempts=4, base_delay=0.01).budget()
    delays = [budget.next_delay() for _ in range(6)]
    assert [d is not None for d in delays] == [True, True, True, False, False, False]
    assert budget.attempts == 4


def test_retry_after_is_honoured_when_longer_than_the_backoff():
    budget = RetrySchedule(base_delay=0.01, max_total_wait=60).budget()
    assert budget.next_delay(retry_after=5.0) == 5.0


def test_backoff_wins_when_longer_than_retry_after():
    budget = RetrySchedule(base_delay=10, max_delay=10, rng=random.Random(3)).budget()
    assert budget.next_delay(retry_after=1.0) >= 5.0


def test_retry_after_beyond_the_remaining_wait_budget_gives_up_at_once():
    budget = RetrySchedule(base_delay=0.01, max_total_wait=10).budget()
    assert budget.next_delay(retry_after=3600) is None
    assert budget.waited == 0


def test_total_wait_is_bounded():
    budget = RetrySchedule(max_attempts=100, base_delay=4, max_delay=4, max_total_wait=10).budget()
    delays = []
    while (delay := budget.next_delay()) is not None:
        delays.append(delay)
    assert sum(delays) <= 10 + 1e-9
    assert budget.waited == pytest.approx(sum(delays))
    assert len(delays) < 100


def test_nonsense_policies_are_refused():
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        RetrySchedule(max_attempts=0)
    with pytest.raises(ValueError, match="must not be negative"):
        RetrySchedule(base_delay=-1)
