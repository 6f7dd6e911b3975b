"""Every call to Google's OAuth endpoints, for the onboarding app and the import alike.

- the PKCE pair (RFC 7636, S256) of an authorization request (:func:`pkce_pair`, :func:`code_challenge`);
- the authorization-code exchange with its PKCE verifier (:func:`exchange_code`, the onboarding callback);
- token revocation (:func:`revoke_token`, the onboarding app's revoke);
- access tokens for one user from their stored refresh token, via google-auth (:class:`UserTokens`, the
  import). Three guarantees on top of ``google.oauth2.credentials.Credentials``:
  a rotated refresh token is handed to ``on_refresh_token`` before the new access token is used
  (the caller stores it in the vault; if that fails, the access token is never used);
  ``invalid_grant`` becomes :class:`ConsentRevoked` (not retried);
  network errors, timeouts, 429 and 5xx from the token endpoint are retried with our retry schedule
  (google-auth's own sleeping retry loop never sees a retryable answer), then :class:`TransientFitError`.

Errors carry a short reason and Google's ``error`` code only: never a token, a code or the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from google.auth import exceptions as auth_exceptions
from google.auth.transport import Response
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2.credentials import Credentials

from .googlefit.fit_errors import (
    ConsentRevoked,
    RefreshTokenStoreFailed,
    TokenRefreshFailed,
    TransientFitError,
)
from .http.retry_schedule import RetrySchedule, Sleep, is_retryable_status, parse_retry_after
from .http.sessions import new_session

OnRefreshToken = Callable[[str], None]


# -- the authorization code flow (onboarding) -----------------------------------------------------------


class GoogleOAuthError(Exception):
    """A call to Google's OAuth endpoints failed; ``reason`` is a short code for the redirect."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenResponse:
    refresh_token: str = field(repr=False)
    id_token: str = field(repr=False)
    scope: str


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a PKCE verifier: unpadded base64url of its SHA-256."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge); the verifier has 64 characters of the unreserved set."""
    verifier = secrets.token_urlsafe(48)
    return verifier, code_challenge(verifier)


def _error_code(response: requests.Response) -> str:
    try:
        code = response.json().get("error", "")
    except ValueError:
        code = ""
    return code if isinstance(code, str) and code.replace("_", "").isalnum() else ""


def exchange_code(
    *,
    token_uri: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> TokenResponse:
    """Trade an authorization code and its PKCE verifier for the user's refresh token and id_token."""
    try:
        response = (session or new_session()).post(
            token_uri,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "client_secret": client_secret,
            },
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise GoogleOAuthError(
            "token_exchange_failed", f"token endpoint unreachable ({type(exc).__name__})"
        ) from None
    if response.status_code != 200:
        raise GoogleOAuthError(
            "token_exchange_failed",
            f"token endpoint answered {response.status_code} {_error_code(response)}".rstrip(),
        )
    try:
        body = response.json()
    except ValueError:
        raise GoogleOAuthError("token_exchange_failed", "token endpoint answered non-JSON") from None
    if not isinstance(body, dict):
        raise GoogleOAuthError("token_exchange_failed", "token endpoint answered non-JSON")
    refresh_token, id_token = body.get("refresh_token"), body.get("id_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        raise GoogleOAuthError("no_refresh_token", "Google returned no refresh token")
    if not isinstance(id_token, str) or not id_token:
        raise GoogleOAuthError(
            "no_id_token", "Google returned no id_token (is the userinfo.profile scope set?)"
        )
    scope = body.get("scope")
    return TokenResponse(
        refresh_token=refresh_token, id_token=id_token, scope=scope if isinstance(scope, str) else ""
    )


def revoke_token(
    *, revoke_uri: str, token: str, session: requests.Session | None = None, timeout: float = 30.0
) -> bool:
    """Revoke a refresh (or access) token; False when Google says it is already invalid."""
    try:
        response = (session or new_session()).post(
            revoke_uri, data={"token": token}, timeout=timeout, allow_redirects=False
        )
    except requests.RequestException as exc:
        raise GoogleOAuthError(
            "revoke_failed", f"revoke endpoint unreachable ({type(exc).__name__})"
        ) from None
    if response.status_code == 200:
        return True
    if response.status_code == 400 and _error_code(response) in ("invalid_token", "invalid_grant"):
        return False
    raise GoogleOAuthError("revoke_failed", f"revoke endpoint answered {response.status_code}")


# -- refresh: access tokens for the import (google-auth) ------------------------------------------------


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
