"""A real sandbox speaking Google Health v4, shared by the Health client tests of a module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fitonfhir_dagster.googlehealth.health_catalog import scopes_for
from fitonfhir_dagster.googlehealth.health_client import GoogleHealthClient
from fitonfhir_dagster.http.retry_schedule import RetrySchedule
from fitonfhir_dagster.settings import Settings
from fitonfhir_sandbox.handle import SandboxHandle
from tests.googlefit.conftest import RecordingSleep

HEALTH_SCOPES = scopes_for()


@pytest.fixture(autouse=True)
def _fresh(fresh_sandbox: SandboxHandle) -> None:
    """Every test starts on the module's sandbox without faults."""


@pytest.fixture
def settings(sandbox: SandboxHandle, tmp_path) -> Settings:
    return Settings.from_env(
        sandbox.env() | {"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_MAX_REQUESTS_PER_MINUTE": "0"}
    )


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def onboard(sandbox: SandboxHandle) -> Callable[..., str]:
    """Consent to the googlehealth scopes as a sandbox user and return the refresh token."""

    def consent(email: str = "health.client@example.com", scopes: tuple[str, ...] = HEALTH_SCOPES) -> str:
        return str(sandbox.onboard(email, scopes=scopes)["refresh_token"])

    return consent


@pytest.fixture
def make_client(settings: Settings, sleep: RecordingSleep) -> Iterator[Callable[..., GoogleHealthClient]]:
    clients: list[GoogleHealthClient] = []

    def make(refresh_token: str, **kwargs: Any) -> GoogleHealthClient:
        kwargs.setdefault("sleep", sleep)
        kwargs.setdefault(
            "retry_schedule", RetrySchedule(max_attempts=4, base_delay=0.5, max_delay=4, max_total_wait=30)
        )
        client = GoogleHealthClient(kwargs.pop("settings", settings), refresh_token, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
