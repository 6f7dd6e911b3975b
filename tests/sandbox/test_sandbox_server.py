"""The composed sandbox server: persistence across restarts, loopback only, FHIR mount, CLI, logging."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import requests
from click.testing import CliRunner

from fitonfhir_sandbox import sandbox_app as server
from fitonfhir_sandbox.cli import sandbox as sandbox_command
from fitonfhir_sandbox.context import ClientSpec
from fitonfhir_sandbox.control_routes import is_loopback
from fitonfhir_sandbox.handle import running_sandbox


def test_a_restarted_sandbox_honours_earlier_refresh_tokens_and_keys(tmp_path):
    with running_sandbox(tmp_path) as first:
        tokens = first.onboard("persist@example.com")
    assert (tmp_path / "google.sqlite3").stat().st_mode & 0o777 == 0o600
    with running_sandbox(tmp_path) as second:
        refreshed = second.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        key = jwt.PyJWKClient(second.url + "/oauth2/v3/certs").get_signing_key_from_jwt(tokens["id_token"])
        claims = jwt.decode(tokens["id_token"], key.key, algorithms=["RS256"], audience=second.client_id)
        assert claims["sub"] == second.sub_for_email("persist@example.com")


def test_state_stores_only_token_hashes(tmp_path):
    with running_sandbox(tmp_path) as sandbox:
        tokens = sandbox.onboard("hashes@example.com")
    raw = (tmp_path / "google.sqlite3").read_bytes()
    for secret in (tokens["access_token"], tokens["refresh_token"], "fitonfhir-sandbox-secret"):
        assert secret.encode() not in raw


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com", ""])
def test_non_loopback_hosts_are_refused(host, tmp_path):
    with pytest.raises(server.NotLoopback, match="loopback"):
        server.serve(tmp_path, host=host, port=1)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host):
    assert server.check_loopback(host) == host
    assert is_loopback(host)


def test_cli_refuses_a_public_host(tmp_path):
    result = CliRunner().invoke(sandbox_command, ["--host", "0.0.0.0", "--home", str(tmp_path)])
    assert result.exit_code != 0 and "loopback" in result.output


def test_fhir_is_mounted_with_and_without_trailing_slash(tmp_path):
    with running_sandbox(tmp_path) as sandbox:
        assert (
            requests.get(sandbox.fhir_url + "/metadata", timeout=5).json()["resourceType"]
            == "CapabilityStatement"
        )
        # The base URL itself reaches the FHIR app (POST of a transaction Bundle goes there), no redirect.
        answer = requests.get(sandbox.fhir_url, allow_redirects=False, timeout=5)
        assert answer.status_code != 307 and "resourceType" in answer.json()


def test_extra_clients_with_exact_redirect_uris(tmp_path):
    client = ClientSpec("other-client", "other-secret", ("https://app.example.org/oauth/done",))
    with running_sandbox(tmp_path, clients=(client,)) as sandbox:
        query = sandbox.consent(
            "x@example.com", client_id="other-client", redirect_uri="https://app.example.org/oauth/done"
        )
        assert query["code"]
        page = requests.get(
            sandbox.auth_url,
            params={
                "client_id": "other-client",
                "redirect_uri": "http://127.0.0.1:65533/callback",
                "response_type": "code",
                "scope": "openid",
            },
            timeout=5,
        )
        assert page.status_code == 400 and "redirect_uri_mismatch" in page.text


def test_access_log_never_contains_query_strings(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fitonfhir.sandbox")
    with running_sandbox(tmp_path) as sandbox:
        requests.post(sandbox.revoke_url, params={"token": "ya29.secret-token-value"}, timeout=5)
        deadline = time.monotonic() + 2
        while not any("/revoke" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.name == "fitonfhir.sandbox"]
    assert any(m.startswith("POST /revoke 400") for m in messages)
    assert not any("secret-token-value" in m for m in messages)


def test_the_request_tally_counts_what_was_answered_by_method_and_area(tmp_path):
    with running_sandbox(tmp_path) as sandbox:
        before = sandbox.request_counts()
        requests.get(sandbox.fhir_url + "/metadata", timeout=5)
        requests.get(sandbox.fhir_url + "/Observation/missing", timeout=5)
        requests.post(
            sandbox.fhir_url, json={"resourceType": "Bundle", "type": "batch", "entry": []}, timeout=5
        )
        requests.post(sandbox.revoke_url, params={"token": "ya29.secret"}, timeout=5)
        after = sandbox.request_counts()
    grew = {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}
    # the tally's own reading (GET /_sandbox) is counted after it answers, so the first shows here
    assert grew == {"GET /fhir": 2, "POST /fhir": 1, "POST /revoke": 1, "GET /_sandbox": 1}
    assert not any("secret" in name for name in after)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_sandbox_command_serves_and_prints_its_urls(tmp_path):
    port = _free_port()
    env = {**os.environ, "FITONFHIR_HOME": str(tmp_path), "FITONFHIR_SANDBOX_URL": f"http://127.0.0.1:{port}"}
    code = "from fitonfhir_dagster.cli import main; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "sandbox"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                discovery = requests.get(url + "/.well-known/openid-configuration", timeout=1).json()
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        assert discovery["issuer"] == url
        assert (Path(tmp_path) / "sandbox" / "google.sqlite3").exists()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert f"{url}/fitness/v1/" in output and f"{url}/fhir" in output
