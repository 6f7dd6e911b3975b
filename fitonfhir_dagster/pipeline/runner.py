"""A run's (day, user) keys through the steps: users side by side, each user's days in one window fetch.

The keys are grouped by user. Each user's fetch runs in a worker thread of a bounded pool
(``FITONFHIR_IMPORT_WORKERS``): one Google client for all of the user's days (one token refresh, one
data-source list, each stream read once per contiguous range of days). As each day is archived, that day's
device messages and FHIR write go to a second pool of the same size, shared by all users, so a user's days
are written side by side and the fetch goes on meanwhile (a run of one user, or the last users of a run, no
longer leaves the other workers idle while the FHIR server answers). Every user keeps their own rate
limiter at the per-user limit (``FITONFHIR_MAX_REQUESTS_PER_MINUTE``) and all users share one project
limiter (``FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE``). Outcomes are handed to the caller's thread as soon
as each user-day is done; a failure stays with its user-day (a failed fetch fails that user's days not yet
fetched), never with other users.

A user is imported by one run at a time: the worker holds the user's import lease (``pipeline.leases``,
owner: the Dagster run id) from before the window fetch until the user's last day is written, renews it
before each day's write, and waits a bounded time for another run's lease; a user whose lease stays taken
fails with a retryable ``UserBusy``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..googlefit.ratelimit import ChainedLimiter, Limiter, RequestLimiter
from .datasets import fetch_user_day, iter_user_window
from .leases import ImportLeases, LeaseLost, UserBusy, local_owner
from .messages import Publisher, build_user_day_messages
from .observations import DevicesWritten, convert_user_day
from .step_errors import TransientUserDayError, UserDayError
from .step_stores import StepStores

log = logging.getLogger(__name__)

FIT_DATASETS, DEVICE_MESSAGES, FHIR_OBSERVATIONS = "fit_datasets", "device_messages", "fhir_observations"
STEPS = (FIT_DATASETS, DEVICE_MESSAGES, FHIR_OBSERVATIONS)


@dataclass
class UserDayOutcome:
    """What happened to one (day, user) key: the summaries of the steps that succeeded, or the error."""

    day: str
    user_key: str
    summaries: dict[str, Any] = field(default_factory=dict)  # step -> its summary
    error: UserDayError | None = None
    cause: BaseException | None = None  # the unexpected exception behind ``error``, for its traceback

    @property
    def ok(self) -> bool:
        return self.error is None


def project_limiter(stores: StepStores, workers: int = 1) -> RequestLimiter:
    """The Fit API ceiling shared by every user of a run (``<= 0``: unlimited)."""
    return RequestLimiter(stores.settings.project_max_requests_per_minute, burst=max(5, workers))


def iter_user_days(
    stores: StepStores,
    keys: Iterable[tuple[str, str]],
    steps: Sequence[str] = STEPS,
    *,
    fhir: Any = None,
    templates: tuple[Any, Any] | None = None,
    templates_digest: str | None = None,
    publisher: Publisher | None = None,
    workers: int | None = None,
    limiter: Limiter | None = None,
    owner: str | None = None,
) -> Iterator[UserDayOutcome]:
    """Run ``steps`` for every ``(day, user_key)`` of ``keys``; yields each outcome in the calling thread
    as soon as that user-day finished (in completion order).

    ``fhir`` and ``templates`` are needed when ``steps`` has ``fhir_observations``. ``limiter`` is the
    project limiter (default: :func:`project_limiter`); each user also gets a limiter of their own.
    ``owner`` names this run in the users' import leases (the Dagster run id; default: a fresh id).
    Closing the generator early stops the workers after their current user-day (or their wait for a lease);
    so does an interrupt raised while it waits (the outcomes finished meanwhile are yielded before the
    interrupt goes on).
    """
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; expected some of {STEPS}")
    if FHIR_OBSERVATIONS in steps and (fhir is None or templates is None):
        raise ValueError("the fhir_observations step needs a FHIR client and the templates")
    by_user: dict[str, list[str]] = {}
    for day, user_key in keys:
        days = by_user.setdefault(user_key, [])
        if day not in days:
            days.append(day)
    if not by_user:
        return
    pool_size = max(1, workers or stores.settings.import_workers)
    size = min(pool_size, len(by_user))
    shared = limiter if limiter is not None else project_limiter(stores, size)
    leases = ImportLeases(
        stores.users,
        owner or local_owner(),
        ttl_seconds=stores.settings.user_lease_ttl_seconds,
        wait_seconds=stores.settings.user_lease_wait_seconds,
    )
    day_pool = ThreadPoolExecutor(pool_size, thread_name_prefix="fitonfhir-day")
    job = _UserJob(
        stores,
        tuple(s for s in STEPS if s in steps),
        fhir,
        templates,
        templates_digest,
        publisher,
        leases,
        day_pool,
    )
    done: queue.SimpleQueue[UserDayOutcome | None] = queue.SimpleQueue()
    stop = threading.Event()

    def work(user_key: str, days: list[str]) -> None:
        try:
            job.run_user(_UserRun(user_key, days, shared, done.put, stop))
        finally:
            done.put(None)  # this user is finished

    with (
        leases.heartbeat(),
        day_pool,
        ThreadPoolExecutor(size, thread_name_prefix="fitonfhir-user") as pool,
    ):
        for user_key, days in by_user.items():
            pool.submit(work, user_key, days)
        running = len(by_user)

        def finished() -> Iterator[UserDayOutcome]:
            nonlocal running
            while running:
                item = done.get()
                if item is None:
                    running -= 1
                else:
                    yield item

        try:
            yield from finished()
        except GeneratorExit:
            stop.set()
            raise
        except BaseException:
            # An interrupt (SIGTERM/SIGINT, raised here by the framework while we wait): the workers stop
            # after the user-day in hand; those outcomes are still yielded, then the interrupt goes on.
            stop.set()
            yield from finished()
            raise
        finally:
            stop.set()


def _fail_days(
    emit: Callable[[UserDayOutcome], None],
    user_key: str,
    days: Iterable[str],
    error_for: Callable[[str], UserDayError],
    cause: BaseException | None = None,
) -> None:
    """One failed outcome per day of ``days``, each with its own day's error."""
    for day in days:
        emit(UserDayOutcome(day, user_key, error=error_for(day), cause=cause))


@dataclass
class _UserRun:
    """One user's part of a run: their days, the project limiter, where outcomes go, the run's stop, and
    ``lost``, set by a day task that found the user's lease taken (then the fetch stops)."""

    user_key: str
    days: list[str]
    project: Limiter
    emit: Callable[[UserDayOutcome], None]
    stop: threading.Event
    lost: threading.Event = field(default_factory=threading.Event)


@dataclass
class _UserJob:
    stores: StepStores
    steps: tuple[str, ...]
    fhir: Any
    templates: tuple[Any, Any] | None
    templates_digest: str | None
    publisher: Publisher | None
    leases: ImportLeases
    day_pool: ThreadPoolExecutor  # each fetched day's later steps, for all users
    devices: DevicesWritten = field(default_factory=DevicesWritten)

    def run_user(self, run: _UserRun) -> None:
        """The user's days under the user's import lease (claimed first, released last)."""
        user_key = run.user_key
        try:
            holder = self.leases.acquire(user_key, run.stop)
        except Exception as exc:  # the users table failed: this user only, and retryable
            message = f"import lease: {type(exc).__name__}: {exc}"
            _fail_days(
                run.emit, user_key, run.days, lambda d: TransientUserDayError(user_key, d, message), exc
            )
            return
        if holder is not None:
            if run.stop.is_set():
                return
            message = (
                f"user {user_key} is being imported by run {holder}; gave up waiting for it after"
                f" {self.leases.wait_seconds} s (FITONFHIR_USER_LEASE_WAIT_SECONDS), retry later"
            )
            _fail_days(run.emit, user_key, run.days, lambda d: UserBusy(user_key, d, message))
            return
        try:
            self._run_days(run)
        finally:
            self.leases.release(user_key)

    def _still_ours(self, user_key: str, day: str) -> None:
        """Renew the lease before a user-day's write; raise :class:`LeaseLost` when another run has taken it."""
        if not self.leases.renew(user_key):
            holder = "(unknown)"
            with contextlib.suppress(Exception):  # only for the message
                holder = self.stores.users.import_holder(user_key) or holder
            raise LeaseLost(
                user_key,
                day,
                f"the import lease of user {user_key} expired (not renewed for"
                f" {self.leases.ttl_seconds} s) and run {holder} took it over; its remaining days are left to it",
            )

    def _run_days(self, run: _UserRun) -> None:
        """Fetch the user's window and hand each archived day to the day pool; return when all are done."""
        submitted: list[Future[None]] = []

        def hand_over(outcome: UserDayOutcome) -> None:
            submitted.append(self.day_pool.submit(self._day_task, outcome, run))

        try:
            if FIT_DATASETS not in self.steps:
                for day in run.days:
                    hand_over(UserDayOutcome(day, run.user_key))
                return
            self._fetch_days(run, hand_over)
        finally:
            wait(submitted)

    def _fetch_days(self, run: _UserRun, hand_over: Callable[[UserDayOutcome], None]) -> None:
        user_key = run.user_key
        pending = set(run.days)
        own = RequestLimiter(self.stores.settings.max_requests_per_minute)
        fetched = iter_user_window(self.stores, user_key, run.days, limiter=ChainedLimiter(own, run.project))
        try:
            for day, summary in fetched:
                pending.discard(day)
                hand_over(UserDayOutcome(day, user_key, {FIT_DATASETS: summary}))
                if run.stop.is_set():
                    return
                # A run of the fetch alone renews here; otherwise each day's task renews before it writes,
                # and one that found the lease taken stops the fetch (the message names the new holder).
                if pending and (self.steps == (FIT_DATASETS,) or run.lost.is_set()):
                    try:
                        self._still_ours(user_key, day)
                    except LeaseLost as err:
                        _fail_days(run.emit, user_key, sorted(pending), err.for_day)
                        return
        except UserDayError as err:
            _fail_days(run.emit, user_key, sorted(pending), err.for_day)
        except Exception as exc:  # an SDK or storage failure of one user must not lose the others
            message = f"{FIT_DATASETS}: {type(exc).__name__}: {exc}"
            _fail_days(
                run.emit,
                user_key,
                sorted(pending),
                lambda d: TransientUserDayError(user_key, d, message),
                exc,
            )
        finally:
            fetched.close()

    def _day_task(self, outcome: UserDayOutcome, run: _UserRun) -> None:
        """One fetched user-day through the later steps, unless the run stopped before they started (then only
        the fetch is reported and the retry does the rest) or the user's lease was taken over."""
        if self.steps == (FIT_DATASETS,):
            run.emit(outcome)
            return
        if run.stop.is_set():
            if outcome.summaries:
                run.emit(outcome)
            return
        try:
            self._still_ours(outcome.user_key, outcome.day)  # a failing users table is no lost lease
        except LeaseLost as err:
            run.lost.set()
            outcome.error = err.for_day(outcome.day)
            run.emit(outcome)
            return
        run.emit(self._after_fetch(outcome))

    def _after_fetch(self, outcome: UserDayOutcome) -> UserDayOutcome:
        day, user_key = outcome.day, outcome.user_key
        for step in self.steps:
            if step == FIT_DATASETS:
                continue
            try:
                outcome.summaries[step] = self._run_step(step, day, user_key)
            except UserDayError as err:
                outcome.error = err
            except Exception as exc:  # isolated per user-day, like a UserDayError, but retryable
                outcome.error = TransientUserDayError(user_key, day, f"{step}: {type(exc).__name__}: {exc}")
                outcome.cause = exc
            if outcome.error is not None:
                break
        return outcome

    def _run_step(self, step: str, day: str, user_key: str) -> Any:
        if step == DEVICE_MESSAGES:
            return build_user_day_messages(self.stores, day, user_key, self.publisher)
        if step == FHIR_OBSERVATIONS:
            assert self.templates is not None
            return convert_user_day(
                self.stores,
                self.fhir,
                self.templates,
                day,
                user_key,
                digest=self.templates_digest,
                devices_written=self.devices,
            )
        return fetch_user_day(self.stores, day, user_key)
