"""Shared fixtures: settings on a temp home, a real OIDC issuer (discovery + JWKS over HTTP), and the
onboarding app served by uvicorn on a free loopback port."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import SandboxHandle
from onboarding_app.app import create_app
from onboarding_app.serving import bind_socket, serve_in_background, socket_url

TEST_STATE_SECRET = "test-state-secret-0123456789abcdef"


def make_settings(home: Path, **env: str) -> Settings:
    values = {
        "FITONFHIR_HOME": str(home),
        "FITONFHIR_STATE_SECRET": TEST_STATE_SECRET,
        "FITONFHIR_VAULT_KEY": "",
    }
    values.update(env)
    return Settings.from_env(values)


@dataclass
class Issuer:
    """A real OIDC provider stand-in: it publishes discovery and JWKS and signs tokens."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    published: list[str] = field(default_factory=list)  # kids in the JWKS
    discovery_hits: int = 0
    jwks_hits: int = 0

    def add_key(self, kid: str, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid in self.published:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}

    def token(self, audience: str = "fitonfhir-test", kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "sub": "caller-sub-1", "aud": audience, "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def app(self) -> Starlette:
        def discovery(request: Request) -> JSONResponse:
            self.discovery_hits += 1
            return JSONResponse({"issuer": self.url, "jwks_uri": f"{self.url}/jwks"})

        def jwks(request: Request) -> JSONResponse:
            self.jwks_hits += 1
            return JSONResponse(self.jwks())

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/jwks", jwks)])


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    found = Issuer()
    found.add_key("k1")
    sock = bind_socket()
    found.url = socket_url(sock)
    with serve_in_background(found.app(), sock):
        yield found


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as found:
        yield found


@pytest.fixture(scope="module")
def module_issuer() -> Iterator[Issuer]:
    with running_issuer() as found:
        yield found


@dataclass
class RunningApp:
    url: str
    settings: Settings
    users: SqliteUsersTable
    vault: LocalTokenVault
    client: httpx2.Client

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.client.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.client.post(self.url + path, **kwargs)


class NoFhir:
    """Stands for a FHIR server that must not be reached (refused requests write nothing)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"FHIR must not be called ({name})")


class AppStarter:
    """Starts onboarding apps with extra FITONFHIR_* settings; ``fhir`` defaults to one that must not be
    called (every refusal must write nothing). ``close()`` stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stack: list[tuple[Any, httpx2.Client]] = []

    def __call__(self, fhir: Any = None, users: Any = None, vault: Any = None, **env: str) -> RunningApp:
        sock = bind_socket()
        url = socket_url(sock)
        env.setdefault("FITONFHIR_ONBOARDING_URL", url)
        settings = make_settings(self.root / f"home-{uuid.uuid4().hex[:6]}", **env)
        users = users or SqliteUsersTable(settings.home / "users.sqlite3")
        vault = vault or LocalTokenVault(settings.home / "vault")
        app = create_app(settings, users=users, vault=vault, fhir=fhir if fhir is not None else NoFhir())
        ctx = serve_in_background(app, sock)
        ctx.__enter__()
        client = httpx2.Client(timeout=30, follow_redirects=False)
        self._stack.append((ctx, client))
        return RunningApp(url, settings, users, vault, client)

    def close(self) -> None:
        for ctx, client in reversed(self._stack):
            client.close()
            ctx.__exit__(None, None, None)


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[AppStarter]:
    starter = AppStarter(tmp_path)
    yield starter
    starter.close()


@pytest.fixture(scope="module")
def module_start_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppStarter]:
    starter = AppStarter(tmp_path_factory.mktemp("apps"))
    yield starter
    starter.close()


def start_with_sandbox(starter: AppStarter, sandbox: SandboxHandle, **env: str) -> RunningApp:
    """An onboarding app wired to the sandbox: Google endpoints, id_token issuer and FHIR server."""
    from fitonfhir_dagster.fhir.fhir_client import FhirClient

    return starter(
        fhir=FhirClient(sandbox.fhir_url, max_attempts=1), FITONFHIR_SANDBOX_URL=sandbox.url, **env
    )
