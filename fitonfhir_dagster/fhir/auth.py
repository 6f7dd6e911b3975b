"""How the FHIR client authenticates: nothing, a static bearer token, or Azure AD via azure-identity.

An auth object only produces the ``Authorization`` header value; the client never logs or raises it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fitonfhir_dagster.settings import Settings

AZURE_REFRESH_LEEWAY_SECONDS = 300


@runtime_checkable
class FhirAuth(Protocol):
    def authorization(self) -> str:
        """The value of the ``Authorization`` header for the next request."""

    def invalidate(self) -> bool:
        """Forget a cached credential after a 401; True when a fresh one can be obtained (retry once)."""


class BearerTokenAuth:
    """A fixed bearer token (e.g. from ``FITONFHIR_FHIR_TOKEN``); a 401 cannot be fixed by retrying."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("bearer auth needs a non-empty token (FITONFHIR_FHIR_TOKEN)")
        self._token = token

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=***)"

    def authorization(self) -> str:
        return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        return False


class TokenCredentialLike(Protocol):
    """The part of azure-core's ``TokenCredential`` protocol the client uses."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


class AzureAdAuth:
    """Tokens from an azure-identity credential, cached until ``leeway`` seconds before they expire."""

    def __init__(
        self,
        credential: TokenCredentialLike,
        scope: str,
        leeway: float = AZURE_REFRESH_LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self.scope = scope
        self._leeway = leeway
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0

    def __repr__(self) -> str:
        return f"AzureAdAuth(scope={self.scope!r})"

    def authorization(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_on - self._leeway:
                access = self._credential.get_token(self.scope)
                self._token = str(access.token)
                self._expires_on = float(access.expires_on)
            return f"Bearer {self._token}"

    def invalidate(self) -> bool:
        with self._lock:
            self._token = None
        return True

    @classmethod
    def for_fhir_url(cls, fhir_url: str, credential: TokenCredentialLike | None = None) -> AzureAdAuth:
        """Azure Health Data Services expects the audience ``<fhir url>/.default``."""
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(credential, f"{fhir_url.rstrip('/')}/.default")


def auth_from_settings(settings: Settings) -> FhirAuth | None:
    """``FITONFHIR_FHIR_AUTH``: none | bearer (``FITONFHIR_FHIR_TOKEN``) | azure (DefaultAzureCredential)."""
    if settings.fhir_auth == "none":
        return None
    if settings.fhir_auth == "bearer":
        if not settings.fhir_token:
            raise ValueError("FITONFHIR_FHIR_AUTH=bearer needs FITONFHIR_FHIR_TOKEN to be set")
        return BearerTokenAuth(settings.fhir_token)
    if settings.fhir_auth == "azure":
        return AzureAdAuth.for_fhir_url(settings.fhir_url)
    raise ValueError(f"FITONFHIR_FHIR_AUTH must be none, bearer or azure, got {settings.fhir_auth!r}")
