"""A Key Vault stand-in at the HTTP level, for the real ``SecretClient`` (Key Vault has no emulator).

``KeyVaultWire`` is an ``azure.core`` transport (a ``RequestsTransport``, itself an ``HttpTransport``) whose
``requests`` session is served by an in-memory Key Vault secrets API instead of the network: challenge
authentication (401 + ``WWW-Authenticate``), get/set/delete, soft delete with the deleted-secret
collection and recovery, the 409 Key Vault returns when setting a name that is soft-deleted, and scripted
failures. Every request is recorded, so tests can assert what the SDK sent on the wire.

    wire = KeyVaultWire()
    client = wire.secret_client()
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.keyvault.secrets import SecretClient
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
ACCESS_TOKEN = "kv-test-access-token"
_CHALLENGE = f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="https://vault.azure.net"'


class StaticTokenCredential:
    """A ``TokenCredential`` stand-in: hands out one fixed token and records the scopes asked for."""

    def __init__(self, token: str = ACCESS_TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@dataclass(frozen=True)
class WireRequest:
    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    authorized: bool


@dataclass
class _Secret:
    versions: list[tuple[str, str]] = field(default_factory=list)  # (version id, value)
    content_type: str | None = None


class _KeyVaultAdapter(BaseAdapter):
    def __init__(self, wire: KeyVaultWire) -> None:
        super().__init__()
        self.wire = wire

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        status, headers, payload = self.wire.handle(request)
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}.get(
            status, "Error"
        )
        body = b"" if payload is None else json.dumps(payload).encode()
        response.headers = CaseInsensitiveDict(
            {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(body)), **headers}
        )
        response.raw = io.BytesIO(body)
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


class KeyVaultWire(RequestsTransport):
    """The transport to pass as ``SecretClient(..., transport=wire)``; also the fake vault's state."""

    def __init__(self, vault_url: str | None = None) -> None:
        # A unique host per fake: the SDK caches auth challenges per host for the whole process.
        self.vault_url = vault_url or f"https://fitonfhir-{uuid.uuid4().hex[:8]}.vault.azure.net"
        self.secrets: dict[str, _Secret] = {}
        self.deleted: dict[str, _Secret] = {}
        self.requests: list[WireRequest] = []
        self._failures: list[tuple[str, str, int, str]] = []  # (method, path prefix, status, code)
        self._lock = threading.Lock()
        session = requests.Session()
        session.mount("https://", _KeyVaultAdapter(self))
        super().__init__(session=session, session_owner=False)

    def secret_client(self, credential: StaticTokenCredential | None = None, **kwargs: Any) -> SecretClient:
        return SecretClient(self.vault_url, credential or StaticTokenCredential(), transport=self, **kwargs)

    def fail_next(self, method: str, path_prefix: str, status: int, code: str) -> None:
        """Answer the next matching request with an error (e.g. 403 Forbidden) instead of serving it."""
        self._failures.append((method.upper(), path_prefix, status, code))

    def authorized_requests(self) -> list[WireRequest]:
        return [r for r in self.requests if r.authorized]

    # -- the vault ------------------------------------------------------------------------------------

    def _bundle(self, name: str, secret: _Secret, *, with_value: bool) -> dict[str, Any]:
        version, value = secret.versions[-1]
        now = int(time.time())
        bundle: dict[str, Any] = {
            "id": f"{self.vault_url}/secrets/{name}/{version}",
            "attributes": {
                "enabled": True,
                "created": now,
                "updated": now,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
        }
        if secret.content_type:
            bundle["contentType"] = secret.content_type
        if with_value:
            bundle["value"] = value
        return bundle

    def _deleted_bundle(self, name: str, secret: _Secret) -> dict[str, Any]:
        now = int(time.time())
        return {
            **self._bundle(name, secret, with_value=False),
            "recoveryId": f"{self.vault_url}/deletedsecrets/{name}",
            "deletedDate": now,
            "scheduledPurgeDate": now + 90 * 86400,
        }

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        return status, {}, {"error": {"code": code, "message": message}}

    def handle(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        url = urlsplit(request.url or "")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        raw = request.body
        body = json.loads(raw) if raw else None
        authorized = request.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}"
        method = (request.method or "").upper()
        with self._lock:
            self.requests.append(WireRequest(method, url.path, query, body, authorized))
            if not authorized:
                return 401, {"WWW-Authenticate": _CHALLENGE}, None
            for failure in self._failures:
                if failure[0] == method and url.path.startswith(failure[1]):
                    self._failures.remove(failure)
                    return self._error(
                        failure[2], failure[3], f"scripted {failure[2]} for {method} {url.path}"
                    )
            return self._route(method, [p for p in url.path.split("/") if p], body)

    def _route(
        self, method: str, parts: list[str], body: dict[str, Any] | None
    ) -> tuple[int, dict[str, str], dict[str, Any] | None]:
        not_found = self._error(404, "SecretNotFound", f"A secret with (name/id) {parts[1:2]} was not found")
        if parts[:1] == ["secrets"] and len(parts) >= 2:
            name = parts[1]
            if method == "PUT" and len(parts) == 2:
                if name in self.deleted:
                    return self._error(
                        409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state"
                    )
                secret = self.secrets.setdefault(name, _Secret())
                secret.versions.append((uuid.uuid4().hex, (body or {})["value"]))
                secret.content_type = (body or {}).get("contentType")
                return 200, {}, self._bundle(name, secret, with_value=True)
            if method == "GET" and name in self.secrets:
                return 200, {}, self._bundle(name, self.secrets[name], with_value=True)
            if method == "DELETE" and len(parts) == 2 and name in self.secrets:
                self.deleted[name] = self.secrets.pop(name)
                return 200, {}, self._deleted_bundle(name, self.deleted[name])
            return not_found
        if parts[:1] == ["deletedsecrets"] and len(parts) >= 2:
            name = parts[1]
            if name not in self.deleted:
                return self._error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            if method == "GET" and len(parts) == 2:
                return 200, {}, self._deleted_bundle(name, self.deleted[name])
            if method == "POST" and parts[2:] == ["recover"]:
                self.secrets[name] = self.deleted.pop(name)
                return 200, {}, self._bundle(name, self.secrets[name], with_value=False)
        return self._error(400, "BadParameter", f"unsupported {method} {'/'.join(parts)}")
