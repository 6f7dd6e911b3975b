"""Step 1: fetch one user's Google Fit datasets for a window of UTC days and archive each day unchanged."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from ..googlefit import fit_errors
from ..googlefit.fit_client import DayFetch, GoogleFitClient, select_streams
from ..googlefit.ratelimit import Limiter
from ..sources import SourceError, UserMustAct, source_named
from ..sources.health_source import first_values
from ..stores.archive import object_name
from ..stores.users import GOOGLE_FIT, User, UserState, source_for_day
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
    values_by_type: dict[str, list[float]] = field(default_factory=dict)


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


def _document(user: User, day: str, fetched: DayFetch, sources: list[dict[str, Any]]) -> dict[str, Any]:
    document = {
        "user": user.key,
        "date": day,
        "googleSub": user.google_sub,
        "window": {"startNs": fetched.start_ns, "endNs": fetched.end_ns},
        "sources": sources,
        "pages": {stream: [p.dataset for p in pages] for stream, pages in fetched.streams.items()},
        "badPoints": [
            {"stream": p.stream_id, "page": p.page_index, "reason": bad.reason, "point": bad.point}
            for p in fetched.pages
            for bad in p.bad_points
        ],
        "suppliedFields": [
            {"stream": p.stream_id, "page": p.page_index, "fields": p.supplied_fields}
            for p in fetched.pages
            if p.supplied_fields
        ],
        "stats": fetched.stats.as_dict(),
    }
    return document


def summarize(document: dict[str, Any], summary: DatasetsSummary) -> DatasetsSummary:
    start_ns, end_ns = document["window"]["startNs"], document["window"]["endNs"]
    values: dict[str, list[float]] = defaultdict(list)
    stats = document.get("stats", {})
    summary.streams = len(document["pages"])
    summary.api_calls = int(stats.get("api_calls", 0))
    summary.bytes = int(stats.get("bytes", 0))
    summary.bad_points = len(document.get("badPoints", []))
    summary.dropped_outside_day = int(stats.get("outside_day", 0))
    summary.duplicates = int(stats.get("duplicates", 0))
    summary.supplied_fields = int(stats.get("supplied_fields", 0))
    for pages in document["pages"].values():
        summary.pages += len(pages)
        for page in pages:
            for point in page.get("point", []):
                summary.points += 1
                if not start_ns <= point["startTimeNanos"] <= end_ns:
                    summary.outside_day += 1
                first = (point.get("value") or [{}])[0]
                number = first.get("fpVal", first.get("intVal"))
                if isinstance(number, int | float):
                    values[str(point.get("dataTypeName"))].append(float(number))
    summary.values_by_type = dict(values)
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
            fetches = client.fetch_window(first, last, sources)
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
                day = fetched.day.isoformat()
                document = _document(user, day, fetched, sources)
                del fetched
                stores.archive.put(datasets_object(day, user_key), orjson.dumps(document))
                summary = summarize(document, DatasetsSummary(user_key=user_key, day=day))
                del document
                done.add(day)
                yield day, summary
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
    summary.values_by_type = first_values(document)
    return summary
