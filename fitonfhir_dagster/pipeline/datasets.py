"""Step 1: fetch one user's Google Fit datasets for a window of UTC days and archive each day unchanged."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson

from ..googlefit import fit_errors
from ..googlefit.fit_client import (
    DatasetPage,
    GoogleFitClient,
    WindowDay,
    WindowSlice,
    day_window_ns,
    select_streams,
)
from ..googlefit.ratelimit import Limiter
from ..sources import SourceError, UserMustAct, source_named
from ..sources.health_source import first_values
from ..stores.archive import object_name
from ..stores.users import GOOGLE_FIT, User, UserState, source_for_day
from .day_document import document_lines
from .step_errors import TransientUserDayError, UserDayError, UserNotImportable
from .step_stores import StepStores

KIND = "fit_datasets"
OBJECT = "datasets.json"


@dataclass
class DatasetsSummary:
    user_key: str
    day: str
    streams: int = 0
    pages: int = 0
    points: int = 0
    api_calls: int = 0
    bytes: int = 0
    bad_points: int = 0
    outside_day: int = 0  # archived points whose start lies outside the partition day (must stay 0)
    dropped_outside_day: int = 0  # overlapping points Google returned that belong to the neighbour day
    duplicates: int = 0  # identical points seen on several pages, kept once
    supplied_fields: int = 0  # fields Google left out, filled in from the request (see suppliedFields)
    value_stats: dict[str, ValueStats] = field(default_factory=dict)  # first value of each point, per type


def datasets_object(day: str, user_key: str) -> str:
    return object_name(KIND, day, user_key, OBJECT)


def load_datasets(stores: StepStores, day: str, user_key: str) -> dict[str, Any] | None:
    raw = stores.archive.get(datasets_object(day, user_key))
    return orjson.loads(raw) if raw is not None else None


def _importable_user(stores: StepStores, user_key: str, day: str) -> User:
    user = stores.users.get(user_key)
    if user is None:
        raise UserNotImportable(user_key, day, "no such user in the users table")
    return user


def fetch_user_day(stores: StepStores, day: str, user_key: str) -> DatasetsSummary:
    """One user-day: :func:`fetch_user_window` with a window of one day."""
    return fetch_user_window(stores, user_key, [day])[day]


def fetch_user_window(
    stores: StepStores, user_key: str, days: Iterable[str], *, limiter: Limiter | None = None
) -> dict[str, DatasetsSummary]:
    """Fetch and archive every given day of one user with one token refresh and one data-source list.

    See :func:`iter_user_window`; raises the first failure (days archived before it stay archived).
    """
    return dict(iter_user_window(stores, user_key, days, limiter=limiter))


def iter_user_window(
    stores: StepStores, user_key: str, days: Iterable[str], *, limiter: Limiter | None = None
) -> Generator[tuple[str, DatasetsSummary], None, None]:
    """Fetch one user's days, archive each day as soon as it is complete, yield ``(day, summary)``.

    One Google client for all days: one token refresh, one data-source list, and each stream read once
    per contiguous range of the days, ``[first 00:00 UTC, last + 1 00:00 UTC)``, paged. Points are split
    by the UTC day they START in (a point crossing midnight is archived once, by its start day; points
    starting before the range are dropped). Each day's archive object is the one :func:`fetch_user_day`
    writes, replaced, never merged, holding the same points. Days are yielded newest first within a
    range. A failure raises a :class:`UserDayError` naming the first day not yet yielded; the days
    yielded before it are archived and complete. ``limiter`` replaces the client's per-user limiter
    (e.g. a ``ChainedLimiter`` of the user's limit and the project's).
    """
    wanted = sorted(set(days))
    if not wanted:
        return
    user = _importable_user(stores, user_key, wanted[0])
    # issue 13: days of another source (Google Health after a cut-over) go through the source seam
    elsewhere = [d for d in wanted if source_for_day(user, d) != GOOGLE_FIT]
    if elsewhere:
        for day in elsewhere:
            yield day, fetch_from_source(stores, day, user)
        wanted = [d for d in wanted if d not in elsewhere]
        if not wanted:
            return
    if user.state is not UserState.ACTIVE:
        raise UserNotImportable(user_key, wanted[0], f"user is {user.state.value}; they must onboard again")
    token = stores.vault.get(user_key)
    if not token:
        raise UserNotImportable(
            user_key, wanted[0], "no refresh token in the vault; the user must onboard again"
        )
    done: set[str] = set()
    try:
        yield from _fetch_window(stores, user, wanted, token, done, limiter)
    except fit_errors.ConsentRevoked as exc:
        left = [d for d in wanted if d not in done]
        current = _rotated_token(stores, user_key, token)
        if not current or current == token:
            raise _unauthorized(stores, user_key, left[0], exc) from exc
        try:  # another run rotated the refresh token after we read it: once more with the new one
            yield from _fetch_window(stores, user, left, current, done, limiter)
        except fit_errors.ConsentRevoked as again:
            left = [d for d in wanted if d not in done]
            raise _unauthorized(stores, user_key, left[0], again) from again


ROTATION_WAITS = (
    0.1,
    0.3,
    1.0,
)  # seconds: a concurrent run stores its rotated token right after receiving it


def _rotated_token(stores: StepStores, user_key: str, refused: str, sleep: Any = time.sleep) -> str | None:
    """The vault's token once it differs from ``refused``: another run may have rotated it a moment ago
    and not stored the new one yet (it stores it before using it), so look again a few times first."""
    current = stores.vault.get(user_key)
    for wait in ROTATION_WAITS:
        if current != refused:
            break
        sleep(wait)
        current = stores.vault.get(user_key)
    return current


def contiguous_ranges(days: Sequence[str]) -> list[tuple[date, date]]:
    """Sorted ISO days as (first, last) ranges of consecutive days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted({date.fromisoformat(d) for d in days}):
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


class ValueStats:
    """Count, min, max and mean of the first value of a data type's points (the summary's value ranges)."""

    __slots__ = ("count", "low", "high", "total")

    def __init__(self) -> None:
        self.count = 0
        self.low = math.inf
        self.high = -math.inf
        self.total = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def __repr__(self) -> str:
        return f"ValueStats(count={self.count}, low={self.low}, high={self.high}, mean={self.mean})"


def value_stats(values_by_type: dict[str, list[float]]) -> dict[str, ValueStats]:
    out: dict[str, ValueStats] = {}
    for data_type, values in values_by_type.items():
        stats = out.setdefault(data_type, ValueStats())
        for value in values:
            stats.add(value)
    return out


def _count_page(summary: DatasetsSummary, page: dict[str, Any], start_ns: int, end_ns: int) -> None:
    """Add one archived page's points to the summary (points, points outside the day, value ranges)."""
    stats = summary.value_stats
    for point in page.get("point", []):
        summary.points += 1
        if not start_ns <= point["startTimeNanos"] <= end_ns:
            summary.outside_day += 1
        first = (point.get("value") or [{}])[0]
        number = first.get("fpVal", first.get("intVal"))
        if isinstance(number, int | float):
            data_type = str(point.get("dataTypeName"))
            found = stats.get(data_type)
            if found is None:
                found = stats[data_type] = ValueStats()
            found.add(float(number))


def _count_stats(summary: DatasetsSummary, stats: dict[str, Any]) -> None:
    summary.api_calls = int(stats.get("api_calls", 0))
    summary.bytes = int(stats.get("bytes", 0))
    summary.dropped_outside_day = int(stats.get("outside_day", 0))
    summary.duplicates = int(stats.get("duplicates", 0))
    summary.supplied_fields = int(stats.get("supplied_fields", 0))


def summarize(document: dict[str, Any], summary: DatasetsSummary) -> DatasetsSummary:
    """The summary of an archived Fit user-day document (what :func:`iter_user_window` returns for it)."""
    start_ns, end_ns = document["window"]["startNs"], document["window"]["endNs"]
    _count_stats(summary, document.get("stats", {}))
    summary.streams = len(document["pages"])
    summary.bad_points = len(document.get("badPoints", []))
    for pages in document["pages"].values():
        summary.pages += len(pages)
        for page in pages:
            _count_page(summary, page, start_ns, end_ns)
    return summary


SPOOL_IN_MEMORY = 1 << 20  # bytes of a day's encoded pages kept in memory; beyond that, a temp file


class _DaySpool:
    """One day of a window fetch until the day is complete: its pages encoded as JSON in a spool (in
    memory while small, then a temp file), its bad points and supplied fields, and its summary so far."""

    def __init__(self, summary: DatasetsSummary, bound: tuple[int, int], streams: list[str]) -> None:
        self.summary = summary
        self.bound = bound
        self.file: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115  # close()
        self.size = 0
        self.index: dict[str, list[tuple[int, int]]] = {s: [] for s in streams}  # (offset, length) per page
        self.bad_points: list[dict[str, Any]] = []
        self.supplied: list[dict[str, Any]] = []

    def add(self, page: DatasetPage) -> None:
        encoded = orjson.dumps(page.dataset)
        self.file.write(encoded)
        self.index.setdefault(page.stream_id, []).append((self.size, len(encoded)))
        self.size += len(encoded)
        self.summary.pages += 1
        _count_page(self.summary, page.dataset, *self.bound)
        self.bad_points.extend(
            {"stream": page.stream_id, "page": page.page_index, "reason": bad.reason, "point": bad.point}
            for bad in page.bad_points
        )
        if page.supplied_fields:
            self.supplied.append(
                {"stream": page.stream_id, "page": page.page_index, "fields": page.supplied_fields}
            )

    def pages(self, stream_id: str) -> Iterator[bytes]:
        for offset, length in self.index[stream_id]:
            self.file.seek(offset)
            yield self.file.read(length)

    def close(self) -> None:
        self.file.close()


def _window_days(
    client: GoogleFitClient, user: User, first: date, last: date, sources: list[dict[str, Any]]
) -> Generator[tuple[WindowDay, _DaySpool], None, None]:
    """Each day of ``[first, last]`` with its spool once the day is complete (newest first)."""
    streams = [str(s["dataStreamId"]) for s in sources]
    spools: dict[int, _DaySpool] = {}

    def spool(index: int) -> _DaySpool:
        found = spools.get(index)
        if found is None:
            day = (first + timedelta(days=index)).isoformat()
            found = spools[index] = _DaySpool(
                DatasetsSummary(user_key=user.key, day=day),
                day_window_ns(first + timedelta(days=index)),
                streams,
            )
        return found

    try:
        for item in client.iter_window(first, last, sources):
            if isinstance(item, WindowSlice):
                spool(item.day_index).add(item.page)
                continue
            done = spool(item.day_index)
            del spools[item.day_index]
            try:
                yield item, done
            finally:
                done.close()
    finally:
        for left in spools.values():
            left.close()


def _archive_day(
    stores: StepStores, user: User, sources: list[dict[str, Any]], item: WindowDay, spool: _DaySpool
) -> DatasetsSummary:
    """Write one complete day's document, a page per line (see ``day_document``), replacing the old one."""
    day = item.day.isoformat()
    stats = item.stats.as_dict()
    header = {
        "user": user.key,
        "date": day,
        "googleSub": user.google_sub,
        "window": {"startNs": item.start_ns, "endNs": item.end_ns},
        "sources": sources,
        "badPoints": spool.bad_points,
        "suppliedFields": spool.supplied,
        "stats": stats,
    }
    streams = list(spool.index)
    lines = document_lines(header, ((stream, spool.pages(stream)) for stream in streams))
    stores.archive.put_chunks(datasets_object(day, user.key), lines)
    summary = spool.summary
    _count_stats(summary, stats)
    summary.streams = len(streams)
    summary.bad_points = len(spool.bad_points)
    return summary


def _unauthorized(stores: StepStores, user_key: str, day: str, exc: Exception) -> UserNotImportable:
    stores.users.set_state(
        user_key, UserState.UNAUTHORIZED, reason="invalid_grant: consent revoked or expired"
    )
    return UserNotImportable(
        user_key, day, f"Google refused the refresh token ({exc}); user marked unauthorized"
    )


def _fetch_window(
    stores: StepStores,
    user: User,
    days: list[str],
    refresh_token: str,
    done: set[str],
    limiter: Limiter | None,
) -> Iterator[tuple[str, DatasetsSummary]]:
    user_key = user.key

    def store_rotated(new_token: str) -> None:
        stores.vault.put(user_key, new_token)

    client = GoogleFitClient(
        stores.settings, refresh_token, on_refresh_token=store_rotated, bad_points="collect", limiter=limiter
    )
    try:
        try:
            sources = select_streams(
                client.list_data_sources(), stores.settings.stream_policy, stores.settings.data_types
            )
        except fit_errors.ConsentRevoked:
            raise
        except fit_errors.GoogleFitError as exc:
            cls = TransientUserDayError if exc.retryable else UserDayError
            raise cls(user_key, days[0], f"{type(exc).__name__}: {exc}") from exc
        for first, last in contiguous_ranges(days):
            fetches = _window_days(client, user, first, last, sources)
            try:
                while True:
                    try:
                        fetched = next(fetches, None)
                    except fit_errors.ConsentRevoked:
                        raise
                    except fit_errors.GoogleFitError as exc:
                        cls = TransientUserDayError if exc.retryable else UserDayError
                        left = [d for d in days if d not in done]
                        raise cls(user_key, left[0], f"{type(exc).__name__}: {exc}") from exc
                    if fetched is None:
                        break
                    summary = _archive_day(stores, user, sources, *fetched)
                    del fetched
                    done.add(summary.day)
                    yield summary.day, summary
            finally:
                fetches.close()
    finally:
        client.close()


# -- user-days of another source (Google Health after a cut-over): through the source seam (issue 13)


def fetch_from_source(stores: StepStores, day: str, user: User) -> DatasetsSummary:
    """Fetch one user-day from the user's source for that day and archive it where Fit days go."""
    if user.state is not UserState.ACTIVE:
        raise UserNotImportable(user.key, day, f"user is {user.state.value}; they must onboard again")
    token = stores.vault.get(user.key)
    if not token:
        raise UserNotImportable(user.key, day, "no refresh token in the vault; the user must onboard again")
    source = source_named(source_for_day(user, day))
    the_day = date.fromisoformat(day)

    def store_rotated(new_token: str) -> None:
        stores.vault.put(user.key, new_token)

    try:
        documents = source.fetch_window(stores.settings, user, token, the_day, the_day, store_rotated)
    except fit_errors.ConsentRevoked as exc:
        stores.users.set_state(
            user.key, UserState.UNAUTHORIZED, reason="invalid_grant: consent revoked or expired"
        )
        raise UserNotImportable(
            user.key, day, f"Google refused the refresh token ({exc}); user marked unauthorized"
        ) from exc
    except UserMustAct as exc:
        stores.users.set_state(user.key, UserState.UNAUTHORIZED, reason=f"{source.name}: {exc}"[:500])
        raise UserNotImportable(user.key, day, f"{exc}; user marked unauthorized until they act") from exc
    except SourceError as exc:
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user.key, day, str(exc)) from exc
    except fit_errors.GoogleFitError as exc:  # token refresh problems other than invalid_grant
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user.key, day, f"{type(exc).__name__}: {exc}") from exc
    document = {"user": user.key, **documents[the_day]}
    stores.archive.put(datasets_object(day, user.key), orjson.dumps(document))
    return summarize_source_document(document, DatasetsSummary(user_key=user.key, day=day))


def summarize_source_document(document: dict[str, Any], summary: DatasetsSummary) -> DatasetsSummary:
    stats = document.get("stats", {})
    summary.streams = sum(1 for pages in document["pages"].values() if pages)
    summary.pages = sum(len(pages) for pages in document["pages"].values())
    summary.points = sum(source_named(document["source"]).points_by_type(document).values())
    summary.api_calls = int(stats.get("api_calls", 0))
    summary.bytes = int(stats.get("bytes", 0))
    summary.bad_points = len(document.get("badPoints", []))
    summary.dropped_outside_day = int(stats.get("outside_window", 0))
    summary.value_stats = value_stats(first_values(document))
    return summary
