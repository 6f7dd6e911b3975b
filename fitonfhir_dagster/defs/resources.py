"""One resource per concern, chosen in one place (:func:`resources_from_env`).

A resource's fields are the ``FITONFHIR_*`` settings of its concern, in their environment form (field
``fhir_url`` is ``FITONFHIR_FHIR_URL``), parsed by the one parser in ``settings.py``. Secrets are
``dg.EnvVar`` fields, so their values never reach run config, the UI or the event log; the other values
are plain, so the UI shows which FHIR server or archive a run used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from ..fhir.fhir_client import FhirClient
from ..pipeline.step_stores import StepStores
from ..settings import Settings
from ..stores.archive import Archive
from ..stores.eventhub import EventHubPublisher
from ..stores.factory import open_archive, open_users_table, open_vault
from ..stores.users import UsersTable
from ..stores.vault import TokenVault

PREFIX = "FITONFHIR_"


class SettingsResource(dg.ConfigurableResource):
    """Base of the resources below: unset fields (None) take the embedded default of the parser."""

    def as_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, dg.EnvVar):  # unresolved outside a run (tests, the demo): read it now
                value = value.get_value()
            if value is not None:
                env[PREFIX + name.upper()] = str(value)
        return env

    def settings(self) -> Settings:
        # Start-up already refused a production deployment with settings missing (resources_from_env).
        return Settings.from_env(self.as_env(), check_required=False)


class UsersTableResource(SettingsResource):
    """Users table: SQLite under ``FITONFHIR_HOME``, or PostgreSQL or Azure Tables when configured."""

    home: str | None = None
    postgres_url: str | None = None
    azure_storage_connection_string: str | None = None
    azure_tables_endpoint: str | None = None

    def open(self) -> UsersTable:
        return open_users_table(self.settings())


class TokenVaultResource(SettingsResource):
    """Refresh tokens: Fernet-encrypted files, or Azure Key Vault when configured."""

    home: str | None = None
    vault_key: str | None = None
    keyvault_url: str | None = None

    def open(self) -> TokenVault:
        return open_vault(self.settings())


class ArchiveResource(SettingsResource):
    """Raw archive (datasets, device messages, dead letters, templates): files, or Azure Blob Storage."""

    home: str | None = None
    azure_storage_connection_string: str | None = None
    azure_blob_endpoint: str | None = None
    azure_blob_container: str | None = None

    def open(self) -> Archive:
        return open_archive(self.settings())

    def location(self) -> str:
        settings = self.settings()
        if settings.azure_blob_endpoint or settings.azure_storage_connection_string:
            return f"azure blob container {settings.azure_blob_container}"
        return str(settings.home / "archive")


class FhirServerResource(SettingsResource):
    """The FHIR R4 server Observations are written to."""

    sandbox_url: str | None = None
    fhir_url: str | None = None
    fhir_auth: str | None = None
    fhir_token: str | None = None
    fhir_bundle_size: str | None = None

    def client(self) -> FhirClient:
        return FhirClient.from_settings(self.settings())


class EventHubResource(SettingsResource):
    """Azure Event Hubs for a MedTech service; off (messages stay archived) unless configured."""

    eventhub_connection_string: str | None = None
    eventhub_namespace: str | None = None
    eventhub_name: str | None = None

    @property
    def enabled(self) -> bool:
        return self.settings().eventhub_enabled

    def publisher(self) -> EventHubPublisher | None:
        return EventHubPublisher.from_settings(self.settings()) if self.enabled else None


class GoogleResource(SettingsResource):
    """Google OAuth client, Fit REST and the Health API: what is fetched, how fast."""

    sandbox_url: str | None = None
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_token_uri: str | None = None
    google_fit_url: str | None = None
    streams: str | None = None
    data_types: str | None = None
    page_limit: str | None = None
    max_requests_per_minute: str | None = None
    google_health_url: str | None = None
    health_view: str | None = None
    health_data_types: str | None = None


class ImportOptionsResource(SettingsResource):
    """How the import runs: history and lookback windows, batching, templates and identities."""

    home: str | None = None
    start_date: str | None = None
    initial_days: str | None = None
    lookback_days: str | None = None
    daily_batch_size: str | None = None
    template_style: str | None = None
    device_mapping: str | None = None
    fhir_mapping: str | None = None
    identity_mode: str | None = None
    import_workers: str | None = None
    project_max_requests_per_minute: str | None = None
    fhir_verify: str | None = None
    user_lease_wait_seconds: str | None = None
    user_lease_ttl_seconds: str | None = None


SECRETS = {
    "postgres_url",
    "azure_storage_connection_string",
    "vault_key",
    "fhir_token",
    "eventhub_connection_string",
    "google_client_secret",
}

RESOURCE_TYPES: dict[str, type[SettingsResource]] = {
    "users_table": UsersTableResource,
    "token_vault": TokenVaultResource,
    "archive": ArchiveResource,
    "fhir_server": FhirServerResource,
    "event_hub": EventHubResource,
    "google": GoogleResource,
    "import_options": ImportOptionsResource,
}


def resources_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every resource, configured from the variables that are set; refuses a production deployment
    that lacks a required setting, naming every missing variable."""
    env = os.environ if env is None else env
    Settings.from_env(env)  # one clear error at start-up, before anything is built
    built: dict[str, Any] = {}
    for key, kind in RESOURCE_TYPES.items():
        fields: dict[str, Any] = {}
        for name in kind.model_fields:
            variable = PREFIX + name.upper()
            if env.get(variable, "") != "":
                fields[name] = dg.EnvVar(variable) if name in SECRETS else env[variable]
        built[key] = kind(**fields)
    return built


def open_step_stores(
    google: GoogleResource,
    import_options: ImportOptionsResource,
    users_table: UsersTableResource,
    token_vault: TokenVaultResource,
    archive: ArchiveResource,
) -> StepStores:
    """What the pipeline steps need, for one run."""
    settings = Settings.from_env(
        google.as_env() | import_options.as_env() | users_table.as_env(), check_required=False
    )
    return StepStores(settings, users_table.open(), token_vault.open(), archive.open())


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())
