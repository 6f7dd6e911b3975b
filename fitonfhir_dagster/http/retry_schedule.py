"""When to retry an HTTP call and how long to wait, for every client here (DESIGN section 7).

Retried: 408, 429, 5xx answers, timeouts and connection errors, with exponential backoff plus jitter,
never shorter than the server's ``Retry-After``. Never retried: other 4xx (400/403/404; 401 is handled
by one credential refresh in the clients). Every loop is bounded twice: by attempts and by total waiting time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Sleep = Callable[[float], None]


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now() if now is not None else datetime.now(UTC)
        seconds = (when - current).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with "equal jitter": the n-th wait lies in [b/2, b] with b = min(max_delay, base*2**n).

    ``max_attempts`` counts every try including the first; ``max_total_wait`` caps the summed sleeps.
    A ``Retry-After`` longer than the backoff wins. With ``max_retry_after`` set, a longer Retry-After is
    waited only that long; without it, a Retry-After exceeding what is left of ``max_total_wait`` ends
    the loop at once (the server asks for more patience than we have).
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 32.0
    max_total_wait: float = 120.0
    max_retry_after: float | None = None
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total_wait < 0:
            raise ValueError("retry delays must not be negative")
        if self.max_retry_after is not None and self.max_retry_after < 0:
            raise ValueError("retry delays must not be negative")

    def backoff(self, retry_number: int) -> float:
        """Jittered backoff before retry number ``retry_number`` (0 = first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry_number))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def budget(self) -> RetryBudget:
        return RetryBudget(self)


class RetryBudget:
    """The state of one retry loop: how many attempts were made and how long was waited so far."""

    def __init__(self, schedule: RetrySchedule) -> None:
        self.schedule = schedule
        self.attempts = 1  # the call that just failed
        self.waited = 0.0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before the next attempt, or None when the loop must give up."""
        schedule = self.schedule
        if self.attempts >= schedule.max_attempts:
            return None
        if retry_after is not None and schedule.max_retry_after is not None:
            retry_after = min(retry_after, schedule.max_retry_after)
        delay = schedule.backoff(self.attempts - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        remaining = schedule.max_total_wait - self.waited
        if remaining <= 0:
            return None
        if delay > remaining:
            if retry_after is not None and retry_after > remaining:
                return None  # the server asks for more patience than we have left
            delay = remaining
        self.attempts += 1
        self.waited += delay
        return delay
