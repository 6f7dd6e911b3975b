"""All requests of one client share its limiter; measured with an injected clock instead of waiting."""

from __future__ import annotations

import threading
from datetime import date

import pytest

from fitonfhir_dagster.googlefit.ratelimit import RequestLimiter

DAY = date(2025, 3, 5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def test_a_day_of_every_stream_at_60_requests_per_minute_takes_one_second_per_request(make_client, onboard):
    clock = FakeClock()
    limiter = RequestLimiter(60, burst=1, clock=clock, sleep=clock.sleep)
    client = make_client(onboard(), limiter=limiter)

    sources = client.list_data_sources()
    fetched = client.fetch_day(DAY, client.select_streams(sources, "all"), limit=80)

    requests = client.stats.api_calls
    assert requests == 1 + fetched.stats.api_calls > 34
    assert limiter.requests == requests  # the source listing counts too
    assert clock.now == pytest.approx(requests - 1)  # one second apart after the first


def test_the_settings_limit_is_used_by_default(settings, make_client, onboard):
    from dataclasses import replace

    client = make_client(onboard(), settings=replace(settings, max_requests_per_minute=120))
    assert client.limiter.max_requests_per_minute == 120
    unlimited = make_client(onboard())
    assert unlimited.limiter.unlimited
    unlimited.fetch_day(DAY, unlimited.select_streams(unlimited.list_data_sources()))
    assert unlimited.limiter.total_wait == 0
