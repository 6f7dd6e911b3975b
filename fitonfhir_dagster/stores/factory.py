"""Choose each store's backend from Settings: local by default, Azure when its variables are set."""

from __future__ import annotations

from ..settings import Settings
from .archive import Archive, LocalArchive
from .users import SqliteUsersTable, UsersTable
from .vault import LocalTokenVault, TokenVault


def open_users_table(settings: Settings) -> UsersTable:
    if settings.postgres_url:  # wins over the storage connection string, which keeps serving the Blob archive
        from .postgres_users import PostgresUsersTable

        return PostgresUsersTable.from_settings(settings)
    if settings.azure_tables_endpoint or settings.azure_storage_connection_string:
        from .azure_tables import AzureUsersTable

        return AzureUsersTable.from_settings(settings)
    return SqliteUsersTable(settings.home / "users.sqlite3")


def open_vault(settings: Settings) -> TokenVault:
    if settings.keyvault_url:
        from .azure_keyvault import KeyVaultTokenVault

        return KeyVaultTokenVault.from_settings(settings)
    return LocalTokenVault(settings.home / "vault", settings.vault_key)


def open_archive(settings: Settings) -> Archive:
    if settings.azure_blob_endpoint or settings.azure_storage_connection_string:
        from .azure_blob import BlobArchive

        return BlobArchive.from_settings(settings)
    return LocalArchive(settings.home / "archive")
