"""Google Health API v4 client for one user: identity and data points (list or reconcile) for a window.

Same rules as the Fit client, with its helpers reused: one rate limiter per user
(FITONFHIR_MAX_REQUESTS_PER_MINUTE, Google allows 300/min per user), the googlefit retry policy (429/5xx,
timeouts, Retry-After), one token refresh on 401 through googlefit's ``UserTokens``. Google's error format
(``error.status`` + ``google.rpc.ErrorInfo`` reason) decides what is retried and what needs the user.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson
import requests

from ..google_oauth import OnRefreshToken
from ..googlefit.google_api import GoogleApiClient
from ..googlefit.ratelimit import RequestLimiter
from ..http.retry_schedule import RetryBudget, RetrySchedule, Sleep
from ..settings import Settings
from .health_catalog import HealthType, selected_types
from .health_errors import (
    AccountNotLinked,
    HealthPermissionDenied,
    HealthRequestError,
    HealthUnauthorized,
    MalformedHealthResponse,
    TransientHealthError,
)
from .health_wire import BadDataPoint, NotJson, parse_page, start_day, time_filter

MAX_PAGE_SIZE = 10_000
VIEWS = ("list", "reconcile")


@dataclass
class HealthStats:
    api_calls: int = 0
    retries: int = 0
    pages: int = 0
    points: int = 0
    bytes: int = 0
    bad_points: int = 0
    outside_window: int = 0  # points Google returned that start outside the asked window (dropped, counted)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class HealthPage:
    """One response page of one data type: its checked points and the points set aside."""

    data_type: str
    page_index: int
    points: list[dict[str, Any]]
    bad_points: list[BadDataPoint] = field(default_factory=list)


@dataclass
class WindowFetch:
    """Every selected type's points for a window of UTC days, split by the day each point starts in."""

    first_day: date
    last_day: date
    view: str
    health_user_id: str
    days: dict[date, dict[str, list[HealthPage]]]
    stats: HealthStats


def google_error(body: bytes) -> tuple[str, str, str]:
    """(status, reason, message) of Google's error envelope; blanks when the body is not one."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "", "", ""
    if not isinstance(error, dict):
        return "", "", ""
    reason = ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
            reason = str(detail.get("reason") or "")
            break
    return str(error.get("status") or ""), reason, str(error.get("message") or "")


def _content(response: requests.Response) -> bytes:
    return response.content


class GoogleHealthClient(GoogleApiClient[HealthStats]):
    """One user's Google Health client. Thread-safe: limiter and tokens are shared by all requests."""

    def __init__(
        self,
        settings: Settings,
        refresh_token: str,
        *,
        on_refresh_token: OnRefreshToken | None = None,
        session: requests.Session | None = None,
        retry_schedule: RetrySchedule | None = None,
        limiter: RequestLimiter | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            settings,
            refresh_token,
            base_url=settings.google_health_url.rstrip("/") + "/v4/",
            stats=HealthStats(),
            on_refresh_token=on_refresh_token,
            session=session,
            retry_schedule=retry_schedule,
            limiter=limiter,
            sleep=sleep,
            timeout=timeout,
        )

    def _get(
        self, path: str, params: Mapping[str, Any], what: str, stats: HealthStats | None = None
    ) -> bytes:
        """A 200 body of ``GET v4/{path}``, with rate limit, bounded retries and one refresh on 401."""
        return self._get_with_retries(self.base_url + path, params, what, stats, _content)

    def _unauthorized(self, what: str) -> Exception:
        return HealthUnauthorized(f"{what}: Google answered 401 even after a token refresh", status=401)

    def _retry_reason(self, status: int, response: requests.Response) -> str:
        google_status, google_reason, _ = google_error(response.content)
        return f"HTTP {status} {google_status or ''} {google_reason or ''}".rstrip()

    def _unavailable(self, what: str, budget: RetryBudget, reason: str) -> Exception:
        return TransientHealthError(
            f"{what}: Google Health still unavailable after {budget.attempts} attempts "
            f"({budget.waited:.1f} s waited); last failure: {reason}"
        )

    def _refusal(self, status: int, response: requests.Response, what: str) -> Exception:
        return self._refusal_of_body(status, response.content, what)

    @staticmethod
    def _refusal_of_body(status: int, body: bytes, what: str) -> Exception:
        google_status, reason, message = google_error(body)
        detail = f": {google_status} {reason} {message}".rstrip() if google_status or message else ""
        if reason == "ACCOUNT_NOT_LINKED":
            return AccountNotLinked(
                f"{what}: the Google account is not linked to Google Health (ACCOUNT_NOT_LINKED); the user must "
                "set up Google Health and consent again",
                status=status,
                reason=reason,
            )
        if status == 403:
            return HealthPermissionDenied(
                f"{what}: Google denied access (403){detail}; check the granted googlehealth scopes",
                status=status,
                reason=reason,
            )
        return HealthRequestError(
            f"{what}: Google rejected the request ({status}){detail}", status=status, reason=reason
        )

    def _json(self, path: str, params: Mapping[str, Any], what: str, stats: HealthStats | None = None) -> Any:
        """``_get`` + JSON; a body cut short is fetched again within the same retry budget rules."""
        for _ in range(self.retry_schedule.max_attempts):
            body = self._get(path, params, what, stats)
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                self._count(stats, retries=1)
        raise TransientHealthError(f"{what}: Google Health kept sending unreadable bodies")

    # -- API -------------------------------------------------------------------------------------------

    def identity(self, stats: HealthStats | None = None) -> dict[str, Any]:
        """``users/me/identity``: the stable ``healthUserId`` (1-63 characters) and the legacy Fitbit id."""
        body = self._json("users/me/identity", {}, "reading users/me/identity", stats)
        health_user_id = body.get("healthUserId") if isinstance(body, dict) else None
        if not isinstance(health_user_id, str) or not 1 <= len(health_user_id) <= 63:
            raise MalformedHealthResponse(
                "users/me/identity: 'healthUserId' is missing or not 1-63 characters"
            )
        return body

    def data_point_pages(
        self,
        health_type: HealthType,
        first_day: date,
        end_day: date,
        *,
        view: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        stats: HealthStats | None = None,
    ) -> list[HealthPage]:
        """Every page of one type's points starting in ``[first_day, end_day)`` (newest first, as Google
        orders them), following ``nextPageToken``; a repeated token is a malformed answer, not a loop."""
        view = view or self.settings.health_view
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        path = f"users/me/dataTypes/{health_type.name}/dataPoints" + (
            ":reconcile" if view == "reconcile" else ""
        )
        params: dict[str, Any] = {
            "filter": time_filter(health_type, first_day, end_day),
            "pageSize": page_size,
        }
        pages: list[HealthPage] = []
        seen: set[str] = set()
        while True:
            index = len(pages)
            what = f"{health_type.name} {view} page {index}"
            for attempt in range(self.retry_schedule.max_attempts):
                body = self._get(path, params, what, stats)
                try:
                    points, token, bad = parse_page(body, health_type, index)
                    break
                except NotJson:
                    if attempt + 1 == self.retry_schedule.max_attempts:
                        raise TransientHealthError(
                            f"{what}: Google Health kept sending unreadable bodies"
                        ) from None
                    self._count(stats, retries=1)
            pages.append(HealthPage(health_type.name, index, points, bad))
            self._count(stats, pages=1, bad_points=len(bad))
            if not token:
                return pages
            if token in seen:
                raise MalformedHealthResponse(f"{what}: nextPageToken repeats")
            seen.add(token)
            params = {**params, "pageToken": token}

    def fetch_window(
        self,
        first_day: date,
        last_day: date,
        type_names: Iterable[str] | None = None,
        *,
        view: str | None = None,
    ) -> WindowFetch:
        """Each selected type once for the whole window (one token refresh, one paging walk per type),
        then split by the UTC day each point starts in; days without points get empty lists."""
        view = view or self.settings.health_view
        stats = HealthStats()
        health_user_id = str(self.identity(stats)["healthUserId"])
        types = selected_types(self.settings.health_data_types if type_names is None else type_names)
        days: dict[date, dict[str, list[HealthPage]]] = {}
        day = first_day
        while day <= last_day:
            days[day] = {t.name: [] for t in types}
            day += timedelta(days=1)
        for health_type in types:
            for page in self.data_point_pages(
                health_type, first_day, last_day + timedelta(days=1), view=view, stats=stats
            ):
                by_day: dict[date, list[dict[str, Any]]] = {}
                for point in page.points:
                    point_day = start_day(health_type, point)
                    if point_day not in days:
                        stats.outside_window += 1
                        continue
                    by_day.setdefault(point_day, []).append(point)
                for point_day, points in by_day.items():
                    days[point_day][health_type.name].append(
                        HealthPage(health_type.name, page.page_index, points)
                    )
                    stats.points += len(points)
                if page.bad_points:  # kept with the window's first day: the reason names type, page and point
                    days[first_day][health_type.name].append(
                        HealthPage(health_type.name, page.page_index, [], page.bad_points)
                    )
        return WindowFetch(first_day, last_day, view, health_user_id, days, stats)
