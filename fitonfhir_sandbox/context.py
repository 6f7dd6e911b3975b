"""What every Google-emulator route shares: state, faults, clock, options and the signing key."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from fitonfhir_dagster.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from fitonfhir_sandbox.faults import FaultRegistry
from fitonfhir_sandbox.google_state import SandboxState


class SandboxClock:
    """Wall-clock time plus an offset that tests can advance (token/code expiry, "today")."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclass(frozen=True)
class ClientSpec:
    """An OAuth client to register; no redirect URIs means the loopback ``/callback`` policy."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...] = ()


DEFAULT_CLIENT = ClientSpec(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)


class RequestTally:
    """Requests answered, by method and first path segment (``GET /fitness``, ``POST /fhir``): what an
    import cost the stand-ins, read through ``GET /_sandbox/requests`` by benchmarks in another process."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._guard = threading.Lock()

    def count(self, method: str, path: str) -> None:
        area = "/" + path.lstrip("/").split("/", 1)[0]
        with self._guard:
            self._counts[f"{method} {area}"] += 1

    def counts(self) -> dict[str, int]:
        with self._guard:
            return dict(self._counts)


class GoogleSandbox:
    """The Google emulator's shared context (one per app)."""

    def __init__(
        self,
        home: Path,
        base_url: str,
        *,
        clients: tuple[ClientSpec, ...] = (),
        rotate_refresh_tokens: bool = False,
        faults: FaultRegistry | None = None,
        clock: SandboxClock | None = None,
    ) -> None:
        self.home = home
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SandboxClock()
        self.faults = faults or FaultRegistry()
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.requests = RequestTally()
        self.state = SandboxState(home / "google.sqlite3", self.clock)
        for client in (DEFAULT_CLIENT, *clients):
            self.state.register_client(client.client_id, client.client_secret, client.redirect_uris)

    @cached_property
    def _key(self) -> tuple[str, rsa.RSAPrivateKey]:
        return self.state.signing_key()

    def sign(self, claims: dict[str, Any]) -> str:
        kid, key = self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        kid, key = self._key
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}
