"""Running one pipeline step over every key of a run, so one bad user never blocks the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dagster as dg

from ..partitions import split_user_day
from ..pipeline.errors import UserDayError

T = TypeVar("T")


@dataclass
class StepOutcome:
    done: dict[str, Any] = field(default_factory=dict)  # partition key -> summary
    failed: dict[str, UserDayError] = field(default_factory=dict)

    def raise_if_failed(self) -> None:
        """Fail the step after every other key was processed; retry only if some failure is retryable."""
        if not self.failed:
            return
        lines = [str(err) for err in self.failed.values()]
        retryable = any(err.retryable for err in self.failed.values())
        raise dg.Failure(
            description=f"{len(self.failed)} of {len(self.failed) + len(self.done)} user-days failed:\n"
            + "\n".join(lines),
            metadata={"failed_partitions": dg.MetadataValue.json(sorted(self.failed))},
            allow_retries=retryable,
        )


def run_per_user_day(context: dg.AssetExecutionContext, step: Callable[[str, str], T]) -> StepOutcome:
    outcome = StepOutcome()
    for key in context.partition_keys:
        day, user_key = split_user_day(key)
        try:
            outcome.done[key] = step(day, user_key)
        except UserDayError as err:
            context.log.error(str(err))
            outcome.failed[key] = err
    return outcome
