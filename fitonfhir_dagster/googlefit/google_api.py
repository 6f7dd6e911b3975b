"""What the Google Fit and the Google Health clients share: one user's authorized GET against a Google
REST API, through the rate limiter, with one token refresh on 401 and bounded retries (429/5xx/timeouts,
``http.retry_schedule``) and lifetime counters. Each client says how its API's answers become errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Self, TypeVar

import requests

from ..google_oauth import OnRefreshToken, UserTokens
from ..http.retry_schedule import RetryBudget, RetrySchedule, Sleep, is_retryable_status, parse_retry_after
from ..http.sessions import new_session
from ..settings import Settings
from .ratelimit import Limiter, RequestLimiter

StatsT = TypeVar("StatsT")  # a dataclass of int counters holding at least api_calls, retries and bytes
T = TypeVar("T")


class GoogleApiClient(Generic[StatsT]):
    """Base of one user's Google API client. Thread-safe: limiter and tokens are shared by all requests.

    ``sleep`` is used for retry backoff (and by the default limiter); tests inject a recorder.
    Subclasses name their errors: :meth:`_refusal`, :meth:`_unauthorized`, :meth:`_unavailable`.
    """

    # Errors raised by ``read`` for a 200 body cut short in transit: retried like a 5xx.
    unreadable_body: tuple[type[Exception], ...] = ()

    def __init__(
        self,
        settings: Settings,
        refresh_token: str,
        *,
        base_url: str,
        stats: StatsT,
        on_refresh_token: OnRefreshToken | None = None,
        session: requests.Session | None = None,
        retry_schedule: RetrySchedule | None = None,
        limiter: Limiter | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.session = session or new_session()
        self.retry_schedule = retry_schedule or RetrySchedule()
        self.limiter = limiter or RequestLimiter(settings.max_requests_per_minute, sleep=sleep)
        self.sleep = sleep
        self.timeout = timeout
        self.base_url = base_url
        self.tokens = UserTokens(
            refresh_token=refresh_token,
            token_uri=settings.google_token_uri,
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            # no scopes on refresh: asking for more than the user granted (a subset is allowed) fails
            session=self.session,
            on_refresh_token=on_refresh_token,
            retry_schedule=self.retry_schedule,
            sleep=sleep,
            timeout=timeout,
        )
        self.stats = stats  # lifetime totals of this client
        self._stats_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, stats: StatsT | None, **increments: int) -> None:
        with self._stats_lock:
            for target in (self.stats, stats):
                if target is not None:
                    for name, amount in increments.items():
                        setattr(target, name, getattr(target, name) + amount)

    # -- what a subclass says about its API's answers --------------------------------------------------------

    def _refusal(self, status: int, response: requests.Response, what: str) -> Exception:
        """The error for an answer that is neither 200, nor 401, nor retryable (e.g. 400/403/404)."""
        raise NotImplementedError

    def _unauthorized(self, what: str) -> Exception:
        """The error for a 401 that a freshly refreshed access token still gets."""
        raise NotImplementedError

    def _unavailable(self, what: str, budget: RetryBudget, reason: str) -> Exception:
        """The error once the retry budget is spent; ``reason`` is the last failure."""
        raise NotImplementedError

    def _retry_reason(self, status: int, response: requests.Response) -> str:
        """How a retryable answer is described in the final error."""
        return f"HTTP {status}"

    # -- the loop -----------------------------------------------------------------------------------------

    def _get_with_retries(
        self,
        url: str,
        params: Mapping[str, Any],
        what: str,
        stats: StatsT | None,
        read: Callable[[requests.Response], T],
    ) -> T:
        """``read`` of the 200 answer to ``GET url``, with rate limiting, retries and one refresh on 401."""
        budget = self.retry_schedule.budget()
        refreshed = False
        token = self.tokens.access_token()
        while True:
            self.limiter.acquire()
            self._count(stats, api_calls=1)
            retry_after: float | None = None
            try:
                response = self.session.get(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                reason = type(exc).__name__
            else:
                status = response.status_code
                if status == 200:
                    self._count(stats, bytes=len(response.content))
                    try:
                        return read(response)
                    except self.unreadable_body as exc:
                        reason = f"unreadable body ({exc})"
                elif status == 401:
                    if refreshed:
                        raise self._unauthorized(what)
                    refreshed = True
                    token = self.tokens.refresh_after_rejection(token)
                    continue
                elif not is_retryable_status(status):
                    raise self._refusal(status, response, what)
                else:
                    reason = self._retry_reason(status, response)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = budget.next_delay(retry_after)
            if delay is None:
                raise self._unavailable(what, budget, reason)
            self._count(stats, retries=1)
            self.sleep(delay)
