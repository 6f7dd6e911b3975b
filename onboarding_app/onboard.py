"""The side effects of a successful consent and of a revocation, in the order that keeps them safe.

Onboarding: exchange the code (PKCE), verify Google's id_token, ensure the Patient, store the refresh
token in the vault under the user's key, and only then write the users row that makes the user
importable (the original queued the import before the token existed). Revocation: revoke at Google,
delete the vault entry, mark the row ``revoked``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from fitonfhir_dagster.fhir.fhir_errors import FhirError
from fitonfhir_dagster.google_oauth import GoogleOAuthError
from fitonfhir_dagster.stores.keys import USER_KEY_RE, check_user_key, new_user_key
from fitonfhir_dagster.stores.users import User, UsersTable, UserState
from fitonfhir_dagster.stores.vault import TokenVault

from .google_consent import GoogleConsent
from .oauth_state import PendingAuthorization
from .patients import Identifier, PatientError, PatientServer, ensure_patient
from .tokens import InvalidToken, OidcVerifier

log = logging.getLogger(__name__)

REVOKE_REASON = "user_initiated"


class OnboardingError(Exception):
    """A step failed; ``reason`` is the short ``error=`` code sent back to the caller."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Onboarding:
    google: GoogleConsent
    id_tokens: OidcVerifier
    fhir: PatientServer
    users: UsersTable
    vault: TokenVault
    source: str = "google-fit"  # FITONFHIR_DEFAULT_SOURCE: where the consenting user's data comes from

    def complete(self, pending: PendingAuthorization, code: str) -> User:
        try:
            tokens = self.google.exchange_code(code, pending.code_verifier)
        except GoogleOAuthError as exc:
            raise OnboardingError(exc.reason, str(exc)) from None
        try:
            google = self.id_tokens.verify(tokens.id_token)
        except InvalidToken as exc:
            raise OnboardingError("invalid_id_token", f"Google's id_token was refused: {exc}") from None
        try:
            patient_id = ensure_patient(
                self.fhir,
                external=Identifier(pending.external_system, pending.external_id),
                platform=Identifier(google.issuer, google.subject),
            )
        except (FhirError, PatientError) as exc:
            raise OnboardingError("fhir_error", str(exc)) from None
        existing = self.users.find_by_google_sub(google.subject)
        key = existing.key if existing else new_user_key()
        try:
            self.vault.put(key, tokens.refresh_token)
        except Exception as exc:
            raise OnboardingError(
                "vault_error", f"storing the refresh token failed ({type(exc).__name__})"
            ) from None
        try:
            user = self.users.upsert_onboarded(
                google_sub=google.subject,
                google_issuer=google.issuer,
                patient_id=patient_id,
                external_system=pending.external_system,
                external_id=pending.external_id,
                scopes=tokens.scope,
                key=key,
                source=self.source,
            )
        except Exception as exc:
            if existing is None:
                self.vault.delete(key)
            raise OnboardingError(
                "users_error", f"writing the users row failed ({type(exc).__name__})"
            ) from None
        if user.key != key:  # a concurrent onboarding of the same Google account created the row first
            self.vault.put(user.key, tokens.refresh_token)
            self.vault.delete(key)
        log.info("onboarded user %s (Patient %s)", user.key, patient_id)
        return user

    def revoke(self, external_system: str, external_id: str, user_key: str | None = None) -> list[str]:
        """Revoke the users onboarded for this identity (only ``user_key`` when given); returns their keys.

        Anonymous callers pass the key their revoke token names: anyone can onboard a Google account
        under any identity, so an identity alone must never reach other accounts.
        """
        revoked = []
        candidates = self.users.list() if user_key is None else [self.users.get(user_key)]
        for user in candidates:
            if user is None or (user.external_system, user.external_id) != (external_system, external_id):
                continue
            if user.state == UserState.REVOKED:
                continue
            token = self.vault.get(user.key)
            if token:
                try:
                    self.google.revoke(token)
                except GoogleOAuthError as exc:
                    raise OnboardingError(exc.reason, str(exc)) from None
            self.vault.delete(user.key)
            self.users.set_state(user.key, UserState.REVOKED, reason=REVOKE_REASON)
            log.info("revoked user %s", user.key)
            revoked.append(user.key)
        return revoked


def _revoke_mac(secret: bytes, external_system: str, external_id: str, user_key: str) -> str:
    message = b"fitonfhir-revoke:" + json.dumps([external_system, external_id, user_key]).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def revoke_token(secret: bytes, external_system: str, external_id: str, user_key: str) -> str:
    """A capability to revoke one onboarded account in anonymous mode: ``<user key>.<HMAC>``, handed
    out on its successful onboarding and bound to both the account and the identity it was linked to."""
    return f"{check_user_key(user_key)}.{_revoke_mac(secret, external_system, external_id, user_key)}"


def revoke_token_user(secret: bytes, external_system: str, external_id: str, token: Any) -> str | None:
    """The user key a valid revoke token names for this identity, or None for anything else."""
    if not isinstance(token, str):
        return None
    user_key, dot, mac = token.partition(".")
    if not dot or not USER_KEY_RE.fullmatch(user_key):
        return None
    expected = _revoke_mac(secret, external_system, external_id, user_key)
    return user_key if hmac.compare_digest(expected.encode(), mac.encode()) else None
