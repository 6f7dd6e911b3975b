"""Onboarding settings have safe defaults and clear errors; ``fitonfhir onboarding serve`` serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx2
import pytest

from fitonfhir_dagster.settings import ConfigError, Settings


def test_defaults_run_the_embedded_demo():
    settings = Settings.from_env({})
    assert settings.onboarding_url == "http://127.0.0.1:8000"
    assert settings.anonymous_login is True
    assert settings.redirect_urls == () and settings.identity_providers == ()
    assert settings.state_secret == ""


def test_naming_an_identity_provider_switches_to_authenticated_mode():
    settings = Settings.from_env(
        {
            "FITONFHIR_IDENTITY_PROVIDERS": "https://login.example/ , https://b.example",
            "FITONFHIR_AUDIENCE": "api",
        }
    )
    assert settings.anonymous_login is False
    assert settings.identity_providers == ("https://login.example/", "https://b.example")


def test_the_lists_are_comma_separated():
    settings = Settings.from_env({"FITONFHIR_REDIRECT_URLS": "https://a.example/cb, https://b.example/cb,"})
    assert settings.redirect_urls == ("https://a.example/cb", "https://b.example/cb")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FITONFHIR_ANONYMOUS_LOGIN": "false"}, "needs FITONFHIR_IDENTITY_PROVIDERS and FITONFHIR_AUDIENCE"),
        (
            {"FITONFHIR_ANONYMOUS_LOGIN": "false", "FITONFHIR_IDENTITY_PROVIDERS": "https://a.example"},
            "FITONFHIR_AUDIENCE",
        ),
        (
            {"FITONFHIR_ANONYMOUS_LOGIN": "maybe"},
            "FITONFHIR_ANONYMOUS_LOGIN must be true or false, got 'maybe'",
        ),
    ],
)
def test_unusable_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_the_secret_is_not_in_the_settings_repr():
    settings = Settings.from_env({"FITONFHIR_STATE_SECRET": "do-not-print-me-0123456789"})
    assert "do-not-print-me" not in repr(settings)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_on_the_given_port(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "FITONFHIR_HOME": str(tmp_path),
        "FITONFHIR_ONBOARDING_URL": f"http://127.0.0.1:{port}",
    }
    command = ["onboarding", "serve", "--port", str(port)]  # the `fitonfhir` console script
    process = subprocess.Popen(
        [sys.executable, "-c", "from fitonfhir_dagster.cli import main; main()", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx2.TransportError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        landing = httpx2.get(f"http://127.0.0.1:{port}/")
        assert f'value="http://127.0.0.1:{port}/done"' in landing.text
        assert (tmp_path / "onboarding" / "state.key").exists()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
