"""Refresh tokens in Azure Key Vault: the production twin of ``LocalTokenVault``.

One secret per user, named from the opaque user key (``refresh-token-u-...``; Key Vault names allow only
``[0-9a-zA-Z-]``), never from the Google account. Like the original, ``put`` first recovers a soft-deleted
secret of that name (a vault with soft delete refuses to set it otherwise) and then sets a new version.
Errors name the user key and the HTTP status, never the token.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient

from ..settings import ConfigError, Settings
from .keys import check_user_key
from .vault import VaultError

log = logging.getLogger(__name__)

SECRET_PREFIX = "refresh-token-"
# Pinned so the wire protocol does not move with SDK upgrades; 7.5 has every operation used here.
API_VERSION = "7.5"
RECOVERY_TIMEOUT_SECONDS = 60.0


def secret_name(user_key: str) -> str:
    return SECRET_PREFIX + check_user_key(user_key)


def _describe(exc: HttpResponseError) -> str:
    code = getattr(exc.error, "code", None) if exc.error is not None else None
    return f"HTTP {exc.status_code}" + (f" ({code})" if code else "")


class KeyVaultTokenVault:
    """``TokenVault`` on Azure Key Vault."""

    def __init__(self, client: SecretClient, *, recovery_timeout: float = RECOVERY_TIMEOUT_SECONDS) -> None:
        self.client = client
        self._recovery_timeout = recovery_timeout

    @classmethod
    def from_settings(cls, settings: Settings, **client_kwargs: Any) -> KeyVaultTokenVault:
        """FITONFHIR_KEYVAULT_URL with DefaultAzureCredential (managed identity in Azure)."""
        if not settings.keyvault_url:
            raise ConfigError("Key Vault is not configured: set FITONFHIR_KEYVAULT_URL")
        from azure.identity import DefaultAzureCredential

        client_kwargs.setdefault("api_version", API_VERSION)
        return cls(SecretClient(settings.keyvault_url, DefaultAzureCredential(), **client_kwargs))

    def _recover_if_deleted(self, name: str, user_key: str) -> None:
        try:
            self.client.get_deleted_secret(name)
        except ResourceNotFoundError:
            return
        log.info("recovering the soft-deleted refresh token secret of %s before setting it", user_key)
        poller = self.client.begin_recover_deleted_secret(name)
        poller.wait(timeout=self._recovery_timeout)
        if not poller.done():
            raise VaultError(
                f"Key Vault did not finish recovering the deleted secret of {user_key} "
                f"within {self._recovery_timeout:.0f}s"
            )

    def put(self, user_key: str, refresh_token: str) -> None:
        name = secret_name(user_key)
        if not refresh_token:
            raise VaultError("refusing to store an empty refresh token")
        try:
            self._recover_if_deleted(name, user_key)
            self.client.set_secret(name, refresh_token, content_type="application/x-refresh-token")
        except HttpResponseError as exc:
            raise VaultError(
                f"Key Vault refused to store the refresh token of {user_key}: {_describe(exc)}"
            ) from exc

    def get(self, user_key: str) -> str | None:
        name = secret_name(user_key)
        try:
            return self.client.get_secret(name).value
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise VaultError(
                f"Key Vault refused to read the refresh token of {user_key}: {_describe(exc)}"
            ) from exc

    def delete(self, user_key: str) -> None:
        """Begin deletion (soft delete keeps it recoverable for the vault's retention period)."""
        name = secret_name(user_key)
        try:
            self.client.begin_delete_secret(name)
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            raise VaultError(
                f"Key Vault refused to delete the refresh token of {user_key}: {_describe(exc)}"
            ) from exc
