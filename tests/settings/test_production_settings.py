"""A production deployment (a Google client id is set) uses Google's URLs and refuses to start half-configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fitonfhir_dagster.settings import ONBOARDING, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT = {"FITONFHIR_GOOGLE_CLIENT_ID": "1234.apps.googleusercontent.com"}
COMPLETE = CLIENT | {
    "FITONFHIR_GOOGLE_CLIENT_SECRET": "s3cret",
    "FITONFHIR_FHIR_URL": "https://fhir.example.org/r4",
    "FITONFHIR_VAULT_KEY": "k" * 44,
}


def test_nothing_configured_is_the_embedded_sandbox():
    settings = Settings.from_env({})
    assert settings.uses_sandbox
    assert settings.google_token_uri.startswith("http://127.0.0.1:")
    assert settings.fhir_url.startswith("http://127.0.0.1:")


def test_only_a_client_id_refuses_and_names_every_missing_variable():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(CLIENT)
    message = str(refused.value)
    for name in (
        "FITONFHIR_GOOGLE_CLIENT_SECRET",
        "FITONFHIR_FHIR_URL",
        "FITONFHIR_VAULT_KEY or FITONFHIR_KEYVAULT_URL",
    ):
        assert name in message
    assert "127.0.0.1" not in message


def test_the_onboarding_app_also_needs_its_public_url_and_a_shared_state_secret():
    Settings.from_env(COMPLETE)  # enough for the import
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(COMPLETE, consumer=ONBOARDING)
    assert "FITONFHIR_ONBOARDING_URL" in str(refused.value)
    assert "FITONFHIR_STATE_SECRET" in str(refused.value)


def test_a_configured_client_talks_to_google_never_to_loopback():
    settings = Settings.from_env(COMPLETE)
    assert not settings.uses_sandbox
    assert settings.google_auth_uri == "https://accounts.google.com/o/oauth2/v2/auth"
    assert settings.google_token_uri == "https://oauth2.googleapis.com/token"
    assert settings.google_revoke_uri == "https://oauth2.googleapis.com/revoke"
    assert settings.google_fit_url == "https://www.googleapis.com/fitness/v1/"
    everything = [str(v) for v in vars(settings).values()]
    assert not [v for v in everything if "127.0.0.1" in v and v != settings.sandbox_url and "8000" not in v]


def _without_fitonfhir_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITONFHIR_")}
    return env | extra


@pytest.mark.parametrize(
    "command",
    [
        ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
        ["fitonfhir", "users", "list"],
        ["fitonfhir", "onboarding", "serve", "--port", "1"],
    ],
    ids=["code-location", "cli", "onboarding-app"],
)
def test_start_up_refuses_with_only_a_client_id(command, tmp_path):
    executable = str(Path(sys.executable).with_name(command[0]))
    done = subprocess.run(
        [executable, *command[1:]],
        cwd=ROOT,
        env=_without_fitonfhir_env(FITONFHIR_HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path), **CLIENT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "FITONFHIR_GOOGLE_CLIENT_SECRET" in output and "FITONFHIR_FHIR_URL" in output, output[-2000:]


def test_what_the_import_is_configured_with_reaches_the_run_through_its_resources(tmp_path):
    from fitonfhir_dagster.defs.resources import open_step_stores, resources_from_env

    env = {
        "FITONFHIR_HOME": str(tmp_path),
        "FITONFHIR_STREAMS": "all",
        "FITONFHIR_PAGE_LIMIT": "77",
        "FITONFHIR_IMPORT_WORKERS": "2",
        "FITONFHIR_PROJECT_MAX_REQUESTS_PER_MINUTE": "600",
        "FITONFHIR_FHIR_VERIFY": "true",
        "FITONFHIR_HEALTH_VIEW": "reconcile",
        "FITONFHIR_TEMPLATE_STYLE": "original",
        "FITONFHIR_USER_LEASE_WAIT_SECONDS": "45",
        "FITONFHIR_USER_LEASE_TTL_SECONDS": "15",
    }
    built = resources_from_env(env)
    stores = open_step_stores(
        built["google"], built["import_options"], built["users_table"], built["token_vault"], built["archive"]
    )
    settings = stores.settings
    assert (settings.stream_policy, settings.page_limit, settings.import_workers) == ("all", 77, 2)
    assert settings.project_max_requests_per_minute == 600 and settings.fhir_verify is True
    assert (settings.health_view, settings.template_style) == ("reconcile", "original")
    assert (settings.user_lease_wait_seconds, settings.user_lease_ttl_seconds) == (45, 15)
    assert settings.home == tmp_path.resolve()


def test_an_import_lease_needs_a_ttl_of_at_least_a_second(tmp_path):
    defaults = Settings.from_env({"FITONFHIR_HOME": str(tmp_path)})
    assert (defaults.user_lease_wait_seconds, defaults.user_lease_ttl_seconds) == (300, 120)
    with pytest.raises(ConfigError, match="FITONFHIR_USER_LEASE_TTL_SECONDS must be >= 1"):
        Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_USER_LEASE_TTL_SECONDS": "0"})


def test_secrets_become_env_var_references_never_values(tmp_path):
    from dagster import EnvVar

    from fitonfhir_dagster.defs.resources import resources_from_env

    built = resources_from_env(
        {"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_FHIR_AUTH": "bearer", "FITONFHIR_FHIR_TOKEN": "t0ken"}
    )
    token = built["fhir_server"].fhir_token
    assert isinstance(token, EnvVar) and token.env_var_name == "FITONFHIR_FHIR_TOKEN"
