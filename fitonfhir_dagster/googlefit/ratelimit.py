"""Client-side request limiters: one per user (``FITONFHIR_MAX_REQUESTS_PER_MINUTE``) and one shared by
every user of a run (``FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE``), chained.

A token bucket: ``burst`` requests may go at once, after that one request every ``60 / max`` seconds.
Callers reserve their slot under a lock and sleep outside it, so threads sharing a client queue up fairly
and the long-run rate never exceeds the limit. ``max_requests_per_minute <= 0`` means unlimited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RequestLimiter:
    def __init__(
        self,
        max_requests_per_minute: int,
        *,
        burst: int = 5,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.max_requests_per_minute = max_requests_per_minute
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self.total_wait = 0.0
        self.requests = 0

    @property
    def unlimited(self) -> bool:
        return self.max_requests_per_minute <= 0

    def reserve(self) -> float:
        """Take one slot and return how long the caller must wait before using it (no sleeping here)."""
        with self._lock:
            self.requests += 1
            if self.unlimited:
                return 0.0
            rate = self.max_requests_per_minute / 60.0
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * rate)
            self._updated = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / rate
            self.total_wait += wait
            return wait

    def acquire(self) -> float:
        """Wait until one more request may be sent; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class Limiter(Protocol):
    def acquire(self) -> float: ...


class ChainedLimiter:
    """Every request passes each limiter in turn: a user's own limit, then a limit shared by the project.

    The per-user slot is taken first, so a user held back by their own limit never holds a project slot
    while it waits. Thread-safe as its parts are.
    """

    def __init__(self, *limiters: Limiter) -> None:
        self.limiters = limiters

    def acquire(self) -> float:
        return sum(limiter.acquire() for limiter in self.limiters)
