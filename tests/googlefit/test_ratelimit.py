"""The client-side limiter keeps one client under max_requests_per_minute (fake clock, no real waiting)."""

from __future__ import annotations

import threading

import pytest

from fitonfhir_dagster.googlefit.ratelimit import RequestLimiter


class FakeClock:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(rpm: int, burst: int = 5) -> tuple[RequestLimiter, FakeClock]:
    clock = FakeClock()
    return RequestLimiter(rpm, burst=burst, clock=clock, sleep=clock.sleep), clock


def test_a_burst_goes_out_at_once_then_requests_are_spaced_evenly():
    limit, clock = limiter(300, burst=5)
    waits = [limit.acquire() for _ in range(8)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5:] == pytest.approx([0.2, 0.2, 0.2])


def test_300_requests_at_300_per_minute_take_about_a_minute():
    limit, clock = limiter(300, burst=5)
    start = clock.now
    for _ in range(300):
        limit.acquire()
    elapsed = clock.now - start
    assert elapsed == pytest.approx((300 - 5) * 60 / 300)  # 59 s
    assert limit.total_wait == pytest.approx(elapsed)


def test_the_rate_in_any_minute_never_exceeds_the_limit_plus_burst():
    limit, clock = limiter(120, burst=3)
    sent_at = []
    for _ in range(500):
        limit.acquire()
        sent_at.append(clock.now)
    for i, t in enumerate(sent_at):
        in_window = sum(1 for u in sent_at[i:] if u < t + 60)
        assert in_window <= 120 + 3


def test_idle_time_refills_the_burst_but_never_beyond_it():
    limit, clock = limiter(60, burst=2)
    limit.acquire(), limit.acquire()
    clock.now += 3600
    assert [limit.acquire() for _ in range(3)] == pytest.approx([0, 0, 1.0])


@pytest.mark.parametrize("rpm", [0, -1])
def test_zero_or_negative_means_unlimited(rpm):
    limit, clock = limiter(rpm)
    for _ in range(1000):
        assert limit.acquire() == 0
    assert clock.sleeps == []
    assert limit.requests == 1000


def test_threads_sharing_a_limiter_each_get_their_own_slot():
    limit, clock = limiter(60, burst=4)  # the clock never moves: every slot must be distinct
    waits: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            wait = limit.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(round(w, 6) for w in waits) == [0.0] * 4 + [float(n) for n in range(1, 197)]


def test_burst_must_be_positive():
    with pytest.raises(ValueError, match="burst must be >= 1"):
        RequestLimiter(60, burst=0)
