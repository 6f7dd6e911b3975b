"""Bearer JWT validation against trusted OIDC issuers, with discovery and JWKS cached per issuer.

Used for callers' tokens in authenticated mode and for Google's id_token after the code exchange.
Discovery is fetched lazily (a failing authority does not poison the others, and is retried on the
next request); each issuer's JWKS is cached by ``jwt.PyJWKClient``, which refetches on an unknown ``kid``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
import requests

from fitonfhir_dagster.http.sessions import new_session

log = logging.getLogger(__name__)

# Asymmetric algorithms only: "none" and HMAC (which a public JWKS key could be abused for) are refused.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
DEFAULT_LEEWAY_SECONDS = 60
_BEARER_RE = re.compile(r"^\s*Bearer\s+(\S+)\s*$", re.IGNORECASE)
_DISCOVERY_RETRY_SECONDS = 30.0


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why but never contains the token."""


@dataclass(frozen=True)
class Caller:
    issuer: str
    subject: str
    claims: dict[str, Any]


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    match = _BEARER_RE.match(authorization or "")
    if not match:
        raise InvalidToken("The request Authorization header is invalid.")
    return match.group(1)


class _Authority:
    """One OIDC authority: its discovery document (fetched once) and a JWKS client."""

    def __init__(
        self, url: str, timeout: float, refresh_cooldown: float, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session or new_session()
        self.timeout = timeout
        self.refresh_cooldown = refresh_cooldown
        self.issuer: str | None = None
        self.jwks: jwt.PyJWKClient | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def discover(self) -> None:
        with self._lock:
            if self.issuer is not None:
                return
            if self._failed_at and time.monotonic() - self._failed_at < _DISCOVERY_RETRY_SECONDS:
                return
            try:
                response = self.session.get(
                    f"{self.url}/.well-known/openid-configuration",
                    timeout=self.timeout,
                    allow_redirects=False,
                )
                response.raise_for_status()
                document = response.json()
                issuer, jwks_uri = document["issuer"], document["jwks_uri"]
            except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                self._failed_at = time.monotonic()
                log.warning("OIDC discovery failed for %s: %s", self.url, type(exc).__name__)
                return
            self.jwks = jwt.PyJWKClient(
                jwks_uri,
                cache_keys=True,
                lifespan=3600,
                timeout=self.timeout,
                cooldown_duration=self.refresh_cooldown,
            )
            self.issuer = issuer


class OidcVerifier:
    """Verifies JWTs signed by one of ``authorities`` for ``audience``."""

    def __init__(
        self,
        authorities: tuple[str, ...] | list[str],
        audience: str,
        *,
        leeway: int = DEFAULT_LEEWAY_SECONDS,
        timeout: float = 10.0,
        refresh_cooldown: float = 30.0,
    ) -> None:
        """``refresh_cooldown``: minimum seconds between JWKS refetches forced by unknown ``kid``s, so
        tokens with random kids cannot make us hammer the provider."""
        self.audience = audience
        self.leeway = leeway
        session = new_session()  # discovery only; PyJWKClient fetches the JWKS itself
        self._authorities = [_Authority(a, timeout, refresh_cooldown, session) for a in authorities]

    def _authority_for(self, issuer: str) -> _Authority:
        for authority in self._authorities:
            authority.discover()
            if authority.issuer == issuer:
                return authority
        raise InvalidToken(f"Issuer {issuer!r} not found in the list of authorized identity providers.")

    def verify(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken("The security token is invalid.") from exc
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken(f"The token algorithm {algorithm!r} is not accepted (signed tokens only).")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise InvalidToken("The token has no issuer.")
        authority = self._authority_for(issuer)
        assert authority.jwks is not None
        try:
            key = authority.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=authority.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientError as exc:
            raise InvalidToken(f"No signing key of {issuer!r} matches the token.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"The token was refused: {type(exc).__name__}.") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("The token subject is empty.")
        return Caller(issuer=issuer, subject=subject, claims=claims)
