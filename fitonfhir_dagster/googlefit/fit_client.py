"""Google Fit REST client for one user: data sources, dataset pages, one UTC day of data.

Every request to the Fit API goes through the client's rate limiter and retry schedule; a 401 triggers
one token refresh and one retry. Responses are parsed with orjson and converted by :mod:`.wire`.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import requests

from ..gc_pause import paused_gc
from ..google_oauth import OnRefreshToken
from ..http.retry_schedule import RetryBudget, RetrySchedule, Sleep
from ..settings import Settings
from . import catalog
from .fit_errors import (
    FitNotFound,
    FitPermissionDenied,
    FitRequestError,
    FitUnauthorized,
    MalformedResponse,
    ResponseNotJson,
    TransientFitError,
)
from .google_api import GoogleApiClient
from .ratelimit import Limiter
from .wire import BadPoint, BadPointMode, parse_dataset, supply_missing_fields

NS_PER_SECOND = 1_000_000_000
STREAM_POLICIES = ("merged", "all")


@dataclass
class FetchStats:
    """Counters of one fetch, for Dagster metadata."""

    api_calls: int = 0  # HTTP requests sent to the Fit API, retries included
    retries: int = 0
    pages: int = 0
    points: int = 0  # points kept
    bytes: int = 0  # response body bytes received
    bad_points: int = 0
    outside_day: int = 0  # overlapping points that start on another day (they belong to that day)
    duplicates: int = 0
    supplied_fields: int = 0  # fields Google left out that the request determines (e.g. dataSourceId)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class DatasetPage:
    """One dataset page as Google sent it (int64 fields as ints); ``page_index`` 0 is the newest page."""

    stream_id: str
    page_index: int
    dataset: dict[str, Any]
    bad_points: list[BadPoint] = field(default_factory=list)
    size_bytes: int = 0
    supplied_fields: dict[str, int] = field(default_factory=dict)  # field -> times filled in from the request

    @property
    def points(self) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = self.dataset["point"]
        return points


@dataclass
class DayFetch:
    """Every selected stream's pages for one UTC day, plus counters."""

    day: date
    start_ns: int
    end_ns: int
    streams: dict[str, list[DatasetPage]]
    stats: FetchStats
    window_stats: FetchStats | None = None  # totals of the whole window read (window fetches only)

    @property
    def pages(self) -> list[DatasetPage]:
        return [page for pages in self.streams.values() for page in pages]

    @property
    def bad_points(self) -> list[BadPoint]:
        return [bad for page in self.pages for bad in page.bad_points]


def day_window_ns(day: date) -> tuple[int, int]:
    """[start, end] in epoch nanoseconds of a UTC day: 00:00 up to one nanosecond before the next 00:00."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    start_ns = int(start.timestamp()) * NS_PER_SECOND
    next_ns = int((start + timedelta(days=1)).timestamp()) * NS_PER_SECOND
    return start_ns, next_ns - 1


def select_streams(
    sources: Iterable[Mapping[str, Any]], policy: str = "merged", data_types: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The data sources to import.

    ``policy="merged"`` keeps only Google's de-duplicated merged streams (one per data type, so a reading
    is imported once); ``"all"`` keeps every source (raw and derived, for provenance). ``data_types``
    limits the data types; empty means every type of the catalog.
    """
    if policy not in STREAM_POLICIES:
        raise ValueError(f"stream policy must be one of {STREAM_POLICIES}, got {policy!r}")
    wanted = set(data_types or catalog.DATA_TYPE_NAMES)
    chosen = []
    for source in sources:
        stream_id = source.get("dataStreamId")
        if not isinstance(stream_id, str):
            raise MalformedResponse(f"data source without a dataStreamId: keys {sorted(source)}")
        type_name = (source.get("dataType") or {}).get("name") or _type_from_stream_id(stream_id)
        if type_name not in wanted:
            continue
        if policy == "merged" and not catalog.is_merged_stream(stream_id):
            continue
        chosen.append(dict(source))
    return chosen


def _type_from_stream_id(stream_id: str) -> str:
    parts = stream_id.split(":")
    return parts[1] if len(parts) > 1 else ""


def _stream_id(source: Mapping[str, Any] | str) -> str:
    if isinstance(source, str):
        return source
    stream_id = source.get("dataStreamId")
    if not isinstance(stream_id, str):
        raise ValueError(f"data source without a dataStreamId: keys {sorted(source)}")
    return stream_id


def _json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseNotJson(f"response is not JSON ({exc})") from None


def _google_error(response: requests.Response) -> str:
    """Google's error message (standard JSON envelope) or the status text; never request headers."""
    try:
        body = orjson.loads(response.content)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            reason = ""
            errors = error.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                reason = str(errors[0].get("reason") or "")
            message = str(error.get("message") or error.get("status") or "")
            return f"{message} [{reason}]" if reason else message
        if isinstance(error, str):
            return error
    except orjson.JSONDecodeError:
        pass
    return response.reason or ""


class GoogleFitClient(GoogleApiClient[FetchStats]):
    """One user's Google Fit API client. Thread-safe: limiter and tokens are shared by all requests.

    ``sleep`` is used for retry backoff (and by the default limiter); tests inject a recorder.
    ``stats`` holds lifetime HTTP totals (api_calls, retries, pages, bytes, bad_points); each
    :meth:`fetch_day` also returns its own counters.
    """

    unreadable_body = (ResponseNotJson,)

    def __init__(
        self,
        settings: Settings,
        refresh_token: str,
        *,
        on_refresh_token: OnRefreshToken | None = None,
        session: requests.Session | None = None,
        retry_schedule: RetrySchedule | None = None,
        limiter: Limiter | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = 30.0,
        bad_points: BadPointMode = "raise",
    ) -> None:
        super().__init__(
            settings,
            refresh_token,
            base_url=settings.google_fit_url.rstrip("/") + "/users/me/",
            stats=FetchStats(),
            on_refresh_token=on_refresh_token,
            session=session,
            retry_schedule=retry_schedule,
            limiter=limiter,
            sleep=sleep,
            timeout=timeout,
        )
        self.bad_points = bad_points

    # -- HTTP ------------------------------------------------------------------------------------------

    def _get(
        self,
        path: str,
        params: Mapping[str, Any],
        what: str,
        stats: FetchStats | None = None,
        parse: Callable[[bytes], Any] | None = None,
    ) -> tuple[requests.Response, Any]:
        """GET a Fit API path with rate limiting, retries and one refresh on 401: a 200 response and
        ``parse(body)``. A body ``parse`` cannot read (``ResponseNotJson``: cut short in transit) is
        retried like a 5xx, since fetching it again can succeed."""

        def read(response: requests.Response) -> tuple[requests.Response, Any]:
            return response, None if parse is None else parse(response.content)

        return self._get_with_retries(self.base_url + path, params, what, stats, read)

    def _unauthorized(self, what: str) -> Exception:
        return FitUnauthorized(f"{what}: Google answered 401 even after a token refresh")

    def _unavailable(self, what: str, budget: RetryBudget, reason: str) -> Exception:
        return TransientFitError(
            f"{what}: Google still unavailable after {budget.attempts} attempts "
            f"({budget.waited:.1f} s waited); last failure: {reason}"
        )

    def _refusal(self, status: int, response: requests.Response, what: str) -> Exception:
        message = _google_error(response)
        detail = f": {message}" if message else ""
        if status == 403:
            return FitPermissionDenied(
                f"{what}: Google denied access (403){detail}; check the granted scopes for this data type"
            )
        if status == 404:
            return FitNotFound(f"{what}: not found (404){detail}")
        return FitRequestError(f"{what}: Google rejected the request ({status}){detail}")

    # -- API -------------------------------------------------------------------------------------------

    def list_data_sources(self, stats: FetchStats | None = None) -> list[dict[str, Any]]:
        """Every data source visible to the granted scopes (``users.dataSources.list``)."""
        _, body = self._get("dataSources", {}, "listing data sources", stats, _json_body)
        sources = body.get("dataSource", []) if isinstance(body, dict) else None
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            raise MalformedResponse("listing data sources: 'dataSource' is not a list of objects")
        return sources

    def select_streams(
        self,
        sources: Iterable[Mapping[str, Any]],
        policy: str | None = None,
        data_types: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """:func:`select_streams` with the settings' policy and data types as defaults."""
        return select_streams(
            sources,
            policy or self.settings.stream_policy,
            self.settings.data_types if data_types is None else data_types,
        )

    def fetch_dataset_pages(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
        *,
        bad_points: BadPointMode | None = None,
        stats: FetchStats | None = None,
    ) -> list[DatasetPage]:
        """Every page of one stream's dataset ``start_ns-end_ns`` (points overlapping the range).

        Google applies ``limit`` from the END of the range, so page 0 holds the newest points and each
        ``nextPageToken`` walks towards older ones.
        """
        return list(
            self.iter_dataset_pages(stream_id, start_ns, end_ns, limit, bad_points=bad_points, stats=stats)
        )

    def iter_dataset_pages(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        limit: int | None = None,
        *,
        bad_points: BadPointMode | None = None,
        stats: FetchStats | None = None,
    ) -> Iterator[DatasetPage]:
        """:meth:`fetch_dataset_pages` one page at a time (the next page is requested when asked for)."""
        if start_ns > end_ns:
            raise ValueError(f"dataset range starts after it ends: {start_ns}-{end_ns}")
        mode = bad_points or self.bad_points
        path = f"dataSources/{quote(stream_id, safe='')}/datasets/{start_ns}-{end_ns}"
        params: dict[str, Any] = {"limit": limit or self.settings.page_limit}
        seen_tokens: set[str] = set()
        index = 0
        while True:
            response, (dataset, bad) = self._get(
                path,
                params,
                f"stream {stream_id!r} page {index}",
                stats,
                functools.partial(parse_dataset, stream_id=stream_id, page_index=index, mode=mode),
            )
            supplied = supply_missing_fields(dataset, stream_id=stream_id, start_ns=start_ns, end_ns=end_ns)
            self._count(stats, pages=1, bad_points=len(bad), supplied_fields=sum(supplied.values()))
            token = dataset.get("nextPageToken")
            yield DatasetPage(stream_id, index, dataset, bad, len(response.content), supplied)
            if not token:
                return
            if not isinstance(token, str) or token in seen_tokens:
                raise MalformedResponse(
                    f"stream {stream_id!r} page {index}: nextPageToken repeats or is invalid"
                )
            seen_tokens.add(token)
            params = {**params, "pageToken": token}
            index += 1

    def fetch_day(
        self,
        day: date,
        sources: Iterable[Mapping[str, Any] | str],
        *,
        limit: int | None = None,
        bad_points: BadPointMode | None = None,
    ) -> DayFetch:
        """The points of one UTC day [00:00, 24:00) for each source.

        The request window is ``startNs = day start`` to ``endNs = next day start - 1``. Google returns
        every point that OVERLAPS that window, so a point crossing midnight comes back for both days.
        Rule: a point belongs to the UTC day in which it STARTS. Points starting before the day are
        dropped here (the previous day's partition imports them) and counted in ``stats.outside_day``.
        Identical points (same stream, start, end and values) seen on several pages are kept once.
        """
        start_ns, end_ns = day_window_ns(day)
        stats = FetchStats()
        streams: dict[str, list[DatasetPage]] = {}
        for source in sources:
            stream_id = _stream_id(source)
            pages = self.fetch_dataset_pages(
                stream_id, start_ns, end_ns, limit, bad_points=bad_points, stats=stats
            )
            streams[stream_id] = assign_to_day(pages, start_ns, end_ns, stats)
        return DayFetch(day, start_ns, end_ns, streams, stats)

    def fetch_window(
        self,
        first_day: date,
        last_day: date,
        sources: Iterable[Mapping[str, Any] | str],
        *,
        limit: int | None = None,
        bad_points: BadPointMode | None = None,
    ) -> Iterator[DayFetch]:
        """Every day of ``[first_day 00:00, last_day + 1 00:00)`` with ONE paged read per stream.

        :meth:`iter_window` collected into one :class:`DayFetch` per day (newest day first), yielded when
        the day is complete, so about one day of points is held as Python objects at a time; the import
        itself consumes :meth:`iter_window` and never holds a day's points (``pipeline.datasets``).
        """
        chosen = [_stream_id(s) for s in sources]
        days: dict[int, dict[str, list[DatasetPage]]] = {}
        for item in self.iter_window(first_day, last_day, chosen, limit=limit, bad_points=bad_points):
            if isinstance(item, WindowSlice):
                streams = days.setdefault(item.day_index, {s: [] for s in chosen})
                streams.setdefault(item.page.stream_id, []).append(item.page)
                continue
            streams = days.pop(item.day_index, {}) or {s: [] for s in chosen}
            fetched = DayFetch(item.day, item.start_ns, item.end_ns, streams, item.stats)
            fetched.window_stats = item.window_stats
            yield fetched

    def iter_window(
        self,
        first_day: date,
        last_day: date,
        sources: Iterable[Mapping[str, Any] | str],
        *,
        limit: int | None = None,
        bad_points: BadPointMode | None = None,
    ) -> Iterator[WindowSlice | WindowDay]:
        """Every day of ``[first_day 00:00, last_day + 1 00:00)`` with ONE paged read per stream, as a stream
        of :class:`WindowSlice` (one window page's points of one day, as soon as the page arrived) and
        :class:`WindowDay` (every slice of that day has been yielded; newest day first).

        A point belongs to the day it STARTS in (a point crossing midnight once, by its start day),
        points starting before the window are dropped (``outside_day`` of the first day) and identical
        points are kept once: per day the slices hold exactly the points :meth:`fetch_day` keeps. Each
        slice's ``minStartTimeNs``/``maxEndTimeNs`` is its day's range and its ``page_index`` counts the
        day's slices of its stream; a window page's size (and fields supplied from the request) go to
        the day holding most of its points. Window-wide counters (api_calls, retries) are shared out over
        the days so that they add up; ``window_stats`` holds the totals so far. Only the page being split
        is held as Python objects; what a day keeps to recognise duplicates is a compact key per point.
        """
        if first_day > last_day:
            raise ValueError(f"window starts after it ends: {first_day}..{last_day}")
        window_start, _ = day_window_ns(first_day)
        _, window_end = day_window_ns(last_day)
        n_days = (last_day - first_day).days + 1
        days = [first_day + timedelta(days=i) for i in range(n_days)]
        bounds = [day_window_ns(d) for d in days]
        starts = [b[0] for b in bounds]
        totals = FetchStats()
        states: list[_DayState | None] = [_DayState(bounds[i]) for i in range(n_days)]
        pagers: dict[str, Iterator[DatasetPage]] = {}
        frontier: dict[str, float] = {}  # min endTimeNanos seen per stream; -inf when exhausted
        for source in sources:
            stream_id = _stream_id(source)
            pagers[stream_id] = self.iter_dataset_pages(
                stream_id, window_start, window_end, limit, bad_points=bad_points, stats=totals
            )
            frontier[stream_id] = float("inf")
        next_day = n_days - 1  # newest day not yet complete
        shares = _Shares(n_days)
        while True:
            live = [s for s, f in frontier.items() if f != float("-inf")]
            if live:
                stream_id = max(live, key=frontier.__getitem__)
                page = next(pagers[stream_id], None)
                if page is None:
                    frontier[stream_id] = float("-inf")
                else:
                    with paused_gc():
                        low, slices = _split_page(page, window_start, starts, states, first_day)
                    if low is not None:
                        frontier[stream_id] = min(frontier[stream_id], low)
                    if page.dataset.get("nextPageToken") is None:
                        frontier[stream_id] = float("-inf")
                    del page
                    yield from slices
                    del slices
            reach = max(frontier.values(), default=float("-inf"))
            # every stream has gone below the start of day ``next_day``: that day is complete
            while next_day >= 0 and (reach < starts[next_day] or not live):
                state = states[next_day]
                assert state is not None
                states[next_day] = None  # its duplicate keys go with it
                stats = state.stats
                stats.api_calls, stats.retries = shares.take(totals)
                bound = bounds[next_day]
                yield WindowDay(
                    next_day, days[next_day], bound[0], bound[1], stats, FetchStats(**totals.as_dict())
                )
                next_day -= 1
            if next_day < 0:
                return


@dataclass
class WindowSlice:
    """One window page's points of one day (day rule applied, duplicates dropped): see ``iter_window``."""

    day_index: int  # 0 is the window's first day
    page: DatasetPage


@dataclass
class WindowDay:
    """Every slice of day ``day_index`` of a window has been yielded; the day's counters."""

    day_index: int
    day: date
    start_ns: int
    end_ns: int
    stats: FetchStats
    window_stats: FetchStats  # totals of the window read so far


class _DayState:
    """What one day of a window remembers until it is complete: counters and, per stream, a compact key
    of every point kept (to recognise the same point on another page) and how many slices were cut."""

    def __init__(self, bound: tuple[int, int]) -> None:
        self.start_ns, self.end_ns = bound
        self.stats = FetchStats()
        self.seen: dict[str, dict[tuple[int, int], str | list[str]]] = {}
        self.cut: dict[str, int] = {}

    def next_index(self, stream_id: str) -> int:
        index = self.cut.get(stream_id, 0)
        self.cut[stream_id] = index + 1
        return index

    def keep(self, stream_id: str, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:func:`assign_to_day` for one page of the day, remembering across the day's pages: values are
        kept as their JSON text, and compared as values (key order aside) only when start and end match."""
        seen = self.seen.setdefault(stream_id, {})
        stats, start_ns, end_ns = self.stats, self.start_ns, self.end_ns
        kept = []
        for point in points:
            start = point["startTimeNanos"]
            if not start_ns <= start <= end_ns:
                stats.outside_day += 1
                continue
            key = (start, point["endTimeNanos"])
            values = point["value"]
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = _compact(values)
            else:
                known = earlier if isinstance(earlier, list) else [earlier]
                if any(orjson.loads(text) == values for text in known):
                    stats.duplicates += 1
                    continue
                seen[key] = [*known, _compact(values)]
            kept.append(point)
        stats.points += len(kept)
        return kept


def _compact(values: Any) -> str:
    # str, not orjson's bytes: a short bytes result from orjson.dumps keeps a 4 KB buffer
    return orjson.dumps(values).decode()


class _Shares:
    """Shares window-wide request counters out over its days so that the days add up to the total."""

    def __init__(self, n_days: int) -> None:
        self.given = FetchStats()
        self.left = n_days

    def take(self, totals: FetchStats) -> tuple[int, int]:
        out = []
        for name in ("api_calls", "retries"):
            remaining = getattr(totals, name) - getattr(self.given, name)
            share = remaining if self.left == 1 else remaining // self.left
            setattr(self.given, name, getattr(self.given, name) + share)
            out.append(share)
        self.left -= 1
        return out[0], out[1]


def _split_page(
    page: DatasetPage,
    window_start: int,
    starts: list[int],
    states: list[_DayState | None],
    first_day: date,
) -> tuple[float | None, list[WindowSlice]]:
    """Cut one window page into the slices of its days; returns the page's lowest endTimeNanos too."""
    per_day: dict[int, list[dict[str, Any]]] = {}
    low: float | None = None
    last = len(starts) - 1
    for point in page.points:
        start = point["startTimeNanos"]
        end = point["endTimeNanos"]
        if low is None or end < low:
            low = end
        if start < window_start:
            first = states[0]
            if first is not None:
                first.stats.outside_day += 1
            continue
        index = min(bisect.bisect_right(starts, start) - 1, last)
        per_day.setdefault(index, []).append(point)
    bad_by_day: dict[int, list[BadPoint]] = {}
    for bad in page.bad_points:
        start = bad.point.get("startTimeNanos") if isinstance(bad.point, dict) else None
        number = int(start) if isinstance(start, str) and start.isdigit() else start
        index = bisect.bisect_right(starts, number) - 1 if isinstance(number, int) else last
        bad_by_day.setdefault(min(max(index, 0), last), []).append(bad)
    # the page's size and the fields supplied from the request go to the day holding most of its points
    if per_day:
        owner: int | None = max(per_day, key=lambda i: len(per_day[i]))
    else:
        owner = min(bad_by_day) if bad_by_day else None
    slices = []
    for index in sorted(per_day.keys() | bad_by_day.keys()):
        state = states[index]
        if state is None:  # already complete: cannot happen when pages come newest first
            raise MalformedResponse(
                f"stream {page.stream_id!r} page {page.page_index}: points of {first_day + timedelta(days=index)} "
                "arrived after older ones; Google's newest-first paging was not followed"
            )
        page_index = state.next_index(page.stream_id)
        kept = state.keep(page.stream_id, per_day.get(index, []))
        set_aside = bad_by_day.get(index, [])
        size, supplied = (page.size_bytes, page.supplied_fields) if index == owner else (0, {})
        state.stats.bytes += size
        state.stats.supplied_fields += sum(supplied.values())
        if not kept and not set_aside:
            continue
        dataset = {k: v for k, v in page.dataset.items() if k not in ("point", "nextPageToken")}
        dataset["minStartTimeNs"], dataset["maxEndTimeNs"] = state.start_ns, state.end_ns
        dataset["point"] = kept
        state.stats.pages += 1
        state.stats.bad_points += len(set_aside)
        slices.append(
            WindowSlice(index, DatasetPage(page.stream_id, page_index, dataset, set_aside, size, supplied))
        )
    return low, slices


def assign_to_day(
    pages: list[DatasetPage], start_ns: int, end_ns: int, stats: FetchStats | None = None
) -> list[DatasetPage]:
    """Keep the points of one stream that belong to the day ``[start_ns, end_ns]``, each once.

    A point belongs to the day in which it STARTS, so a point crossing midnight is imported exactly
    once, by the day it began. Points starting outside the window are dropped (they belong to a
    neighbour day) and identical points (start, end, values) on several pages are kept once; both
    are counted in ``stats``. Pages left without points (and without bad points) are dropped.
    """
    with paused_gc():
        return _assign_to_day(pages, start_ns, end_ns, stats if stats is not None else FetchStats())


def _assign_to_day(
    pages: list[DatasetPage], start_ns: int, end_ns: int, stats: FetchStats
) -> list[DatasetPage]:
    seen: dict[tuple[int, int], list[Any]] = {}  # (start, end) -> the distinct value lists seen
    kept_pages = []
    for page in pages:
        kept = []
        for point in page.points:
            start = point["startTimeNanos"]
            if not start_ns <= start <= end_ns:
                stats.outside_day += 1
                continue
            key = (start, point["endTimeNanos"])
            values = point["value"]
            earlier = seen.get(key)
            if earlier is None:
                seen[key] = [values]
            elif values in earlier:  # list/dict equality: key order inside a value does not matter
                stats.duplicates += 1
                continue
            else:
                earlier.append(values)
            kept.append(point)
        page.dataset["point"] = kept
        stats.points += len(kept)
        if kept or page.bad_points:
            kept_pages.append(page)
    return kept_pages
