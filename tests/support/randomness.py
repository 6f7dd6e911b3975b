"""A ``random.Random`` pinned to one value, for deterministic jitter."""

from __future__ import annotations

import random


class FixedRandom(random.Random):
    """Jitter pinned to one point of its range: 0.0 = half the backoff, 0.999 = nearly all of it."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value
