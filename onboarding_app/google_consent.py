"""Google's side of onboarding: the consent URL (PKCE), the code exchange and token revocation.

Endpoints come from Settings, so the same code talks to the sandbox or to Google. The HTTP calls and the
PKCE pair are the product's (``fitonfhir_dagster.google_oauth``, beside the import's token refresh); this
module adds what only onboarding needs: the consent URL, its scopes and the id_token issuer.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fitonfhir_dagster import google_oauth
from fitonfhir_dagster.google_oauth import TokenResponse, code_challenge
from fitonfhir_dagster.googlehealth.health_catalog import scopes_for
from fitonfhir_dagster.http.sessions import new_session
from fitonfhir_dagster.settings import Settings

CALLBACK_PATH = "/api/googlefit/callback"
GOOGLE_ISSUER = "https://accounts.google.com"


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


class GoogleConsent:
    """The consent URL, the code exchange and revocation for this deployment's OAuth client."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        self.settings = settings
        self.redirect_uri = settings.onboarding_url + CALLBACK_PATH
        self.timeout = timeout
        self.session = new_session()

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
        return google_oauth.exchange_code(
            token_uri=self.settings.google_token_uri,
            client_id=self.settings.google_client_id,
            client_secret=self.settings.google_client_secret,
            redirect_uri=self.redirect_uri,
            code=code,
            code_verifier=code_verifier,
            session=self.session,
            timeout=self.timeout,
        )

    def revoke(self, token: str) -> bool:
        """Revoke a refresh (or access) token; False when Google says it is already invalid."""
        return google_oauth.revoke_token(
            revoke_uri=self.settings.google_revoke_uri,
            token=token,
            session=self.session,
            timeout=self.timeout,
        )
