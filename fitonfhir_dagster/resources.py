"""The one resource: builds the domain clients and stores from FITONFHIR_* settings."""

from __future__ import annotations

from functools import cached_property

import dagster as dg

from .config import Settings
from .stores.archive import Archive
from .stores.factory import open_archive, open_users_table, open_vault
from .stores.users import UsersTable
from .stores.vault import TokenVault


class FitOnFhirResource(dg.ConfigurableResource):
    """Settings come from the environment (never run config), so secrets never reach the run record."""

    home: str | None = None

    @cached_property
    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home:
            from dataclasses import replace
            from pathlib import Path

            settings = replace(settings, home=Path(self.home).resolve())
        return settings

    @cached_property
    def users(self) -> UsersTable:
        return open_users_table(self.settings)

    @cached_property
    def vault(self) -> TokenVault:
        return open_vault(self.settings)

    @cached_property
    def archive(self) -> Archive:
        return open_archive(self.settings)

    @cached_property
    def ports(self):  # -> pipeline.ports.Ports
        from .pipeline.ports import Ports

        return Ports(self.settings, self.users, self.vault, self.archive)

    @cached_property
    def event_hub(self):
        """The Event Hub publisher when FITONFHIR_EVENTHUB_* is configured, else None (messages stay archived)."""
        if not self.settings.eventhub_enabled:
            return None
        from .stores.eventhub import EventHubPublisher

        return EventHubPublisher.from_settings(self.settings)

    @cached_property
    def fhir(self):  # -> fhir.client.FhirClient
        from .fhir.client import FhirClient

        return FhirClient.from_settings(self.settings)
