"""FHIR authentication: none, static bearer, Azure AD through azure-identity's credential protocol.

The Azure path is exercised with a local credential object that implements azure-core's
``TokenCredential`` protocol (``get_token(*scopes) -> AccessToken``) in front of a real HTTP server that
checks bearer tokens. What cannot be tested here: real Entra ID token acquisition by
``DefaultAzureCredential`` (managed identity, workload identity, az login) and that Azure Health Data
Services accepts the ``<fhir url>/.default`` audience; both need an Azure tenant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken, TokenCredential
from azure.identity import DefaultAzureCredential

from fitonfhir_dagster.fhir import AzureAdAuth, BearerTokenAuth, FhirAuthError, FhirClient, auth_from_settings
from fitonfhir_dagster.settings import Settings
from fitonfhir_sandbox.fhir_server import create_fhir_app


@dataclass
class StandInCredential:
    """Issues ``token-1``, ``token-2``, ... each valid for ``lifetime`` seconds on the given clock."""

    clock: list[float]
    lifetime: float = 3600
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"token-{len(self.calls)}", int(self.clock[0] + self.lifetime))


def bearer_gate(app, accepted: set[str], seen: list[str]):
    """ASGI wrapper: 401 unless the Authorization header carries an accepted token."""

    async def gate(scope, receive, send):
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            seen.append(header)
            if header.removeprefix("Bearer ") not in accepted:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/fhir+json")],
                    }
                )
                await send(
                    {
                        "type": "http.response.body",
                        "body": b'{"resourceType":"OperationOutcome",'
                        b'"issue":[{"severity":"error","code":"login","diagnostics":"invalid token"}]}',
                    }
                )
                return
        await app(scope, receive, send)

    return gate


def test_stand_in_follows_the_azure_core_protocol():
    assert isinstance(StandInCredential([0.0]), TokenCredential)


def test_azure_tokens_are_requested_for_the_fhir_audience_and_cached(tmp_path: Path, serve_app):
    clock = [1_000.0]
    credential = StandInCredential(clock)
    seen: list[str] = []
    app = bearer_gate(create_fhir_app(tmp_path / "fhir.db"), {"token-1", "token-2"}, seen)
    with serve_app(app) as url:
        auth = AzureAdAuth(credential, f"{url}/.default", clock=lambda: clock[0])
        assert AzureAdAuth.for_fhir_url(f"{url}/", credential=credential).scope == auth.scope
        client = FhirClient(url, auth=auth)
        client.update({"resourceType": "Patient", "id": "p1"})
        assert client.read("Patient", "p1")["id"] == "p1"
        assert credential.calls == [(f"{url}/.default",)]

        clock[0] += 3600 - 299  # inside the 5-minute refresh leeway: a new token is fetched
        client.read("Patient", "p1")
    assert credential.calls == [(f"{url}/.default",)] * 2
    assert seen == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_a_rejected_azure_token_is_refreshed_once_then_reported(tmp_path: Path, serve_app):
    credential = StandInCredential([0.0], lifetime=10**9)
    seen: list[str] = []
    app = bearer_gate(create_fhir_app(tmp_path / "fhir.db"), {"token-2"}, seen)
    with serve_app(app) as url:
        client = FhirClient(url, auth=AzureAdAuth(credential, "api://fhir/.default"))
        assert client.read("Patient", "nobody") is None  # token-1 refused, token-2 accepted
        assert seen == ["Bearer token-1", "Bearer token-2"]

    # A credential whose fresh tokens are also refused fails after one refresh, without looping.
    with serve_app(bearer_gate(create_fhir_app(tmp_path / "f2.db"), set(), [])) as url:
        credential = StandInCredential([0.0])
        with pytest.raises(FhirAuthError) as raised:
            FhirClient(url, auth=AzureAdAuth(credential, "x")).read("Patient", "p1")
    assert len(credential.calls) == 2
    assert "token-" not in str(raised.value) and "invalid token" in str(raised.value)


def test_static_bearer_token_is_sent_and_never_shown(tmp_path: Path, serve_app):
    seen: list[str] = []
    with serve_app(bearer_gate(create_fhir_app(tmp_path / "fhir.db"), {"s3cret"}, seen)) as url:
        client = FhirClient(url, auth=BearerTokenAuth("s3cret"))
        assert client.read("Patient", "p1") is None
        with pytest.raises(FhirAuthError) as raised:
            FhirClient(url, auth=BearerTokenAuth("wrong")).read("Patient", "p1")
    assert seen == ["Bearer s3cret", "Bearer wrong"]  # a static token is not retried
    assert "s3cret" not in repr(client.auth) and "wrong" not in str(raised.value)


def settings(**env: str) -> Settings:
    return Settings.from_env({"FITONFHIR_FHIR_URL": "https://ws-fhir.fhir.azurehealthcareapis.com/", **env})


def test_auth_from_settings():
    assert auth_from_settings(settings()) is None
    bearer = auth_from_settings(settings(FITONFHIR_FHIR_AUTH="bearer", FITONFHIR_FHIR_TOKEN="t"))
    assert isinstance(bearer, BearerTokenAuth) and bearer.authorization() == "Bearer t"
    azure = auth_from_settings(settings(FITONFHIR_FHIR_AUTH="azure"))
    assert isinstance(azure, AzureAdAuth)
    assert azure.scope == "https://ws-fhir.fhir.azurehealthcareapis.com/.default"
    assert isinstance(azure._credential, DefaultAzureCredential)  # noqa: SLF001 - constructed, not used
    client = FhirClient.from_settings(settings(FITONFHIR_FHIR_AUTH="azure"))
    assert client.base_url == "https://ws-fhir.fhir.azurehealthcareapis.com/"


def test_bearer_without_a_token_is_a_clear_error():
    with pytest.raises(ValueError, match="FITONFHIR_FHIR_TOKEN"):
        auth_from_settings(settings(FITONFHIR_FHIR_AUTH="bearer"))
