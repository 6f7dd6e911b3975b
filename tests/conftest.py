"""Test-wide settings, applied before any fitonfhir_dagster module reads the environment."""

import os

# Dagster's step retries would otherwise wait 30 s, 60 s, 120 s: tests check that they happen, not the wait.
os.environ["FITONFHIR_RETRY_DELAY_SECONDS"] = "0"

pytest_plugins = ["fitonfhir_sandbox.pytest_plugin"]
