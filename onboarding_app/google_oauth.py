"""Google's side of onboarding: the consent URL (PKCE), the code exchange and token revocation.

Endpoints come from Settings, so the same code talks to the sandbox or to Google. Errors carry a short
reason and Google's ``error`` code only: never a token, a code or the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from fitonfhir_dagster.googlehealth.health_catalog import scopes_for
from fitonfhir_dagster.settings import Settings

CALLBACK_PATH = "/api/googlefit/callback"
GOOGLE_ISSUER = "https://accounts.google.com"


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


def new_code_verifier() -> str:
    """RFC 7636 verifier: 43+ characters from the unreserved set."""
    return secrets.token_urlsafe(48)


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def onboarding_scopes(settings: Settings) -> tuple[str, ...]:
    """Fit: FITONFHIR_GOOGLE_SCOPES. Google Health: profile plus the googlehealth.*.readonly scopes of the
    selected types (include_granted_scopes keeps a Fit user's earlier grant, so their pre-cut-over days
    stay readable with the one refresh token)."""
    if settings.default_source == "google-health":
        return scopes_for(settings.health_data_types)
    return settings.google_scopes


def google_authority(settings: Settings) -> str:
    """The issuer whose JWKS signs id_tokens: the sandbox itself, or Google."""
    return settings.sandbox_url if settings.uses_sandbox else GOOGLE_ISSUER


def _error_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("error", "")
    except ValueError:
        code = ""
    return code if isinstance(code, str) and code.replace("_", "").isalnum() else ""


class GoogleOAuth:
    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.redirect_uri = settings.onboarding_url + CALLBACK_PATH
        self.timeout = timeout

    def authorize_url(self, state: str, code_verifier: str) -> str:
        query = {
            "client_id": self.settings.google_client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": " ".join(onboarding_scopes(self.settings)),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "code_challenge": code_challenge(code_verifier),
            "code_challenge_method": "S256",
            "state": state,
        }
        return f"{self.settings.google_auth_uri}?{urlencode(query)}"

    def exchange_code(self, code: str, code_verifier: str) -> TokenResponse:
        try:
            response = httpx.post(
                self.settings.google_token_uri,
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "code_verifier": code_verifier,
                    "redirect_uri": self.redirect_uri,
                    "client_id": self.settings.google_client_id,
                    "client_secret": self.settings.google_client_secret,
                },
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
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

    def revoke(self, token: str) -> bool:
        """Revoke a refresh (or access) token; False when Google says it is already invalid."""
        try:
            response = httpx.post(
                self.settings.google_revoke_uri, data={"token": token}, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise GoogleOAuthError(
                "revoke_failed", f"revoke endpoint unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code == 200:
            return True
        if response.status_code == 400 and _error_code(response) in ("invalid_token", "invalid_grant"):
            return False
        raise GoogleOAuthError("revoke_failed", f"revoke endpoint answered {response.status_code}")
