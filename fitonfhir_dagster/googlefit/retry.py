"""When to retry a call to Google and how long to wait (DESIGN section 7).

Retried: 408, 429, 5xx answers, timeouts and connection errors, with exponential backoff plus jitter,
never shorter than the server's ``Retry-After``. Never retried: other 4xx (400/403/404; 401 is handled
by one token refresh in the client). Every loop is bounded twice: by attempts and by total waiting time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Sleep = Callable[[float], None]


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with "equal jitter": the n-th wait lies in [b/2, b] with b = min(max_delay, base*2**n).

    ``max_attempts`` counts every try including the first; ``max_total_wait`` caps the summed sleeps,
    and a ``Retry-After`` that would exceed what is left of it ends the loop at once.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 32.0
    max_total_wait: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_total_wait < 0:
            raise ValueError("retry delays must not be negative")

    def backoff(self, retry_number: int) -> float:
        """Jittered backoff before retry number ``retry_number`` (0 = first retry)."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry_number))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def budget(self) -> RetryBudget:
        return RetryBudget(self)


class RetryBudget:
    """The state of one retry loop: how many attempts were made and how long was waited so far."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempts = 1  # the call that just failed
        self.waited = 0.0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before the next attempt, or None when the loop must give up."""
        if self.attempts >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff(self.attempts - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        remaining = self.policy.max_total_wait - self.waited
        if remaining <= 0:
            return None
        if delay > remaining:
            if retry_after is not None and retry_after > remaining:
                return None  # the server asks for more patience than we have left
            delay = remaining
        self.attempts += 1
        self.waited += delay
        return delay
