"""A running embedded default for Dagster tests: sandbox + onboarding app + onboarded users."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.factory import open_users_table
from fitonfhir_dagster.stores.users import User
from fitonfhir_sandbox.handle import SandboxHandle, running_sandbox
from fitonfhir_sandbox.local_services import local_services
from fitonfhir_sandbox.onboarding_driver import onboard_sandbox_user, sandbox_email


@dataclass
class World:
    sandbox: SandboxHandle
    settings: Settings
    users: list[User]


@pytest.fixture
def world(tmp_path, monkeypatch) -> Iterator[World]:
    """Two users onboarded through the onboarding app against a fresh sandbox, FITONFHIR_HOME in tmp."""
    with running_sandbox(tmp_path / "sandbox") as sandbox:
        monkeypatch.setenv("FITONFHIR_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("FITONFHIR_SANDBOX_URL", sandbox.url)
        settings = Settings.from_env()
        with local_services(settings) as running:
            for i in (1, 2):
                onboard_sandbox_user(running.onboarding_url, i)
            table = open_users_table(settings)
            users = [table.find_by_google_sub(sandbox.sub_for_email(sandbox_email(i))) for i in (1, 2)]
            assert all(users)
            yield World(sandbox, settings, users)  # type: ignore[arg-type]
