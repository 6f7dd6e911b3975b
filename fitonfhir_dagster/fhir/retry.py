"""Bounded retry timing: exponential backoff with jitter, honouring ``Retry-After`` (DESIGN section 7)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay before attempt ``n+1`` after ``n`` failures: ``base * 2**(n-1)`` capped, times a jitter in
    [0.5, 1); a server's Retry-After wins when it is longer (capped by ``max_retry_after``)."""

    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0
    rand: Callable[[], float] = field(default=random.random)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        exponential = min(self.cap, self.base * (2 ** max(0, failures - 1)))
        jittered = exponential * (0.5 + self.rand() / 2)
        if retry_after is not None:
            return max(jittered, min(retry_after, self.max_retry_after))
        return jittered
