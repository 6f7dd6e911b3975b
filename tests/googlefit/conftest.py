"""A real sandbox (Google OAuth + Fit REST emulator over HTTP) shared by the client tests of a module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fitonfhir_dagster.googlefit.fit_client import GoogleFitClient
from fitonfhir_dagster.http.retry_schedule import RetrySchedule
from fitonfhir_dagster.settings import Settings
from fitonfhir_sandbox.handle import SandboxHandle


class RecordingSleep:
    """Injected instead of time.sleep: records the waits, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    @property
    def total(self) -> float:
        return sum(self.calls)


@pytest.fixture(autouse=True)
def _fresh(fresh_sandbox: SandboxHandle) -> None:
    """Every client test starts on the module's sandbox without faults or token rotation."""


@pytest.fixture
def settings(sandbox: SandboxHandle, tmp_path) -> Settings:
    return Settings.from_env(
        sandbox.env() | {"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_MAX_REQUESTS_PER_MINUTE": "0"}
    )


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def make_client(settings: Settings, sleep: RecordingSleep) -> Iterator[Callable[..., GoogleFitClient]]:
    """A client for a refresh token; fast retries (waits are recorded, not slept)."""
    clients: list[GoogleFitClient] = []

    def make(refresh_token: str, **kwargs: Any) -> GoogleFitClient:
        kwargs.setdefault("sleep", sleep)
        kwargs.setdefault(
            "retry_schedule", RetrySchedule(max_attempts=4, base_delay=0.5, max_delay=4, max_total_wait=30)
        )
        client = GoogleFitClient(kwargs.pop("settings", settings), refresh_token, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def onboard(sandbox: SandboxHandle) -> Callable[[str], str]:
    """Consent as a sandbox user (over HTTP) and return their refresh token."""

    def consent(email: str = "fit.client@example.com") -> str:
        return str(sandbox.onboard(email)["refresh_token"])

    return consent
