"""Test-wide settings, applied before any fitonfhir_dagster module reads the environment."""

import os

import pytest

# Dagster's step retries would otherwise wait 30 s, 60 s, 120 s: tests check that they happen, not the wait.
os.environ["FITONFHIR_RETRY_DELAY_SECONDS"] = "0"

pytest_plugins = ["fitonfhir_sandbox.pytest_plugin"]


@pytest.fixture(autouse=True)
def _no_defs_state_storage_of_a_closed_instance():
    """A Dagster instance opened in a fixture sets a context variable it cannot reset when a generator
    fixture closes it in another context; loading definitions later would use that closed instance."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield
