"""Access tokens for one user, from their stored refresh token, via google-auth.

Three guarantees on top of ``google.oauth2.credentials.Credentials``:
- a rotated refresh token is handed to ``on_refresh_token`` before the new access token is used
  (the caller stores it in the vault; if that fails, the access token is never used);
- ``invalid_grant`` becomes :class:`ConsentRevoked` (not retried);
- network errors, timeouts, 429 and 5xx from the token endpoint are retried with our backoff policy
  (google-auth's own sleeping retry loop never sees a retryable answer), then :class:`TransientFitError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from google.auth import exceptions as auth_exceptions
from google.auth.transport import Response
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2.credentials import Credentials

from ..http.retry_schedule import RetrySchedule, Sleep, is_retryable_status, parse_retry_after
from ..http.sessions import new_session
from .fit_errors import ConsentRevoked, RefreshTokenStoreFailed, TokenRefreshFailed, TransientFitError

OnRefreshToken = Callable[[str], None]


class RetryingAuthRequest(GoogleAuthRequest):
    """google-auth's requests transport with our retry policy for the token endpoint.

    A retryable answer that outlasts the policy is raised as ``TransportError``, so google-auth's
    built-in retry loop (which sleeps for real) is never entered.
    """

    def __init__(
        self, session: requests.Session, policy: RetrySchedule, sleep: Sleep, timeout: float
    ) -> None:
        super().__init__(session)
        self.policy = policy
        self.sleep = sleep
        self.timeout = timeout
        self.attempts = 0

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Response:
        budget = self.policy.budget()
        while True:
            self.attempts += 1
            retry_after: float | None = None
            try:
                response = super().__call__(
                    url, method=method, body=body, headers=headers, timeout=timeout or self.timeout, **kwargs
                )
            except auth_exceptions.TransportError as exc:
                reason = f"connection failed ({type(exc.__cause__ or exc).__name__})"
            else:
                if not is_retryable_status(response.status):
                    return response
                reason = f"HTTP {response.status}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = budget.next_delay(retry_after)
            if delay is None:
                raise auth_exceptions.TransportError(
                    f"token endpoint still failing after {budget.attempts} attempts: {reason}"
                )
            self.sleep(delay)


def _oauth_error(exc: auth_exceptions.RefreshError) -> tuple[str, str]:
    """(error, error_description) of a token-endpoint refusal, '' when unknown."""
    for arg in exc.args:
        if isinstance(arg, Mapping):
            return str(arg.get("error") or ""), str(arg.get("error_description") or "")
    return "", ""


class UserTokens:
    """Hands out a valid access token for one user, refreshing (thread-safely) when needed."""

    def __init__(
        self,
        *,
        refresh_token: str,
        token_uri: str,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        session: requests.Session | None = None,
        on_refresh_token: OnRefreshToken | None = None,
        retry_schedule: RetrySchedule | None = None,
        sleep: Sleep = time.sleep,
        timeout: float = 30.0,
    ) -> None:
        if not refresh_token:
            raise ValueError("a refresh token is required")
        self._credentials = Credentials(
            token=None,
            refresh_token=refresh_token,
            token_uri=token_uri,
            client_id=client_id,
            client_secret=client_secret,
            scopes=list(scopes) or None,
        )
        self._request = RetryingAuthRequest(
            session or new_session(), retry_schedule or RetrySchedule(), sleep, timeout
        )
        self._on_refresh_token = on_refresh_token
        self._lock = threading.Lock()
        self.refreshes = 0

    @property
    def token_requests(self) -> int:
        """HTTP requests sent to the token endpoint so far (including retries)."""
        return self._request.attempts

    def access_token(self) -> str:
        """A currently valid access token, refreshing first if there is none or it expired."""
        with self._lock:
            if not self._credentials.valid:
                self._refresh()
            return str(self._credentials.token)

    def refresh_after_rejection(self, rejected_token: str) -> str:
        """Google answered 401 for ``rejected_token``: refresh unless another thread already did."""
        with self._lock:
            if self._credentials.token == rejected_token or not self._credentials.valid:
                self._refresh()
            return str(self._credentials.token)

    def _refresh(self) -> None:
        previous = self._credentials.refresh_token
        try:
            self._credentials.refresh(self._request)
        except auth_exceptions.RefreshError as exc:
            error, description = _oauth_error(exc)
            self._credentials.token = None
            if error == "invalid_grant":
                detail = f" ({description})" if description else ""
                raise ConsentRevoked(
                    f"Google refused the refresh token with invalid_grant{detail}: consent was revoked or the "
                    "token expired; the user must consent again"
                ) from None
            raise TokenRefreshFailed(
                f"Google's token endpoint refused the refresh: {error or 'unrecognised answer'}"
                + (f" ({description})" if description else "")
            ) from None
        except auth_exceptions.TransportError as exc:
            self._credentials.token = None
            raise TransientFitError(f"could not refresh the access token: {exc}") from None
        self.refreshes += 1
        rotated = self._credentials.refresh_token
        if rotated and rotated != previous and self._on_refresh_token is not None:
            try:
                self._on_refresh_token(rotated)
            except Exception as exc:
                # Without the new refresh token stored, using the access token could lose the grant.
                self._credentials.token = None
                raise RefreshTokenStoreFailed(
                    f"storing the rotated refresh token failed ({type(exc).__name__}); access token not used"
                ) from exc
