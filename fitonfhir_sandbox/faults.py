"""Fault injection: rules that make the sandbox misbehave the way Google does on a bad day.

A rule matches requests by path regex (``re.search`` on the URL path) and optional method, fires
``count`` times (``None`` = until cleared) and carries one effect:

- ``status``: answer with that HTTP status (429 with ``retry_after`` -> ``Retry-After`` header, 5xx, ...)
- ``delay``: sleep that many seconds first (alone: a slow but correct response; may combine with others)
- ``error="invalid_grant"``: the token endpoint answers 400 invalid_grant
- ``malformed``: a dataset page comes back broken, see :data:`MALFORMED_VARIANTS`
- ``orphan_source``: a toggle (no count) adding a data source with neither application package name
  nor device uid, for one ``sub`` or for every user

The ASGI middleware here applies rules to every sandbox route except the ``/_sandbox`` control API.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from fitonfhir_sandbox.health_errors_wire import HEALTH_PREFIX, STATUS_NAMES
from fitonfhir_sandbox.health_errors_wire import fault_body as health_fault_body

MALFORMED_VARIANTS = {
    "missing_fields": "no dataSourceId/minStartTimeNs/maxEndTimeNs and the first point has no endTimeNanos",
    "bad_nanos": 'the first point has startTimeNanos "abc"',
    "wrong_value_type": "the first point's fpVal/intVal is a JSON string",
    "missing_value": "the first point has no value array",
    "not_json": "the body is truncated JSON",
}
CONTROL_PREFIX = "/_sandbox"
_ids = itertools.count(1)


class FaultSpecError(ValueError):
    """A fault rule that cannot work; the message names the offending field."""


@dataclass
class FaultRule:
    path: str = ".*"
    method: str | None = None
    count: int | None = 1
    status: int | None = None
    retry_after: int | None = None
    delay: float | None = None
    error: str | None = None
    malformed: str | None = None
    orphan_source: bool = False
    sub: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    fired: int = 0

    def __post_init__(self) -> None:
        try:
            self._regex = re.compile(self.path)
        except (re.error, TypeError) as exc:
            raise FaultSpecError(
                f"fault 'path' is not a valid regular expression: {self.path!r} ({exc})"
            ) from exc
        if self.method is not None:
            if not isinstance(self.method, str) or not self.method.isalpha():
                raise FaultSpecError(f"fault 'method' must be an HTTP method name, got {self.method!r}")
            self.method = self.method.upper()
        effects = [
            name
            for name, on in (
                ("status", self.status is not None),
                ("error", self.error is not None),
                ("malformed", self.malformed is not None),
                ("orphan_source", bool(self.orphan_source)),
            )
            if on
        ]
        if len(effects) > 1:
            raise FaultSpecError(f"a fault carries one effect, got {' + '.join(effects)}")
        if not effects and self.delay is None:
            raise FaultSpecError("a fault needs one of status, delay, error, malformed or orphan_source")
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise FaultSpecError(f"fault 'count' must be a positive integer or null, got {self.count!r}")
        if self.status is not None and (
            not isinstance(self.status, int) or isinstance(self.status, bool) or not 400 <= self.status <= 599
        ):
            raise FaultSpecError(f"fault 'status' must be an HTTP error status 400-599, got {self.status!r}")
        if self.retry_after is not None:
            if self.status not in (429, 503):
                raise FaultSpecError("fault 'retry_after' only goes with status 429 or 503")
            if (
                not isinstance(self.retry_after, int)
                or isinstance(self.retry_after, bool)
                or self.retry_after < 0
            ):
                raise FaultSpecError(
                    f"fault 'retry_after' must be whole seconds >= 0, got {self.retry_after!r}"
                )
        if self.delay is not None and (
            not isinstance(self.delay, int | float)
            or isinstance(self.delay, bool)
            or not 0 <= self.delay <= 120
        ):
            raise FaultSpecError(f"fault 'delay' must be seconds between 0 and 120, got {self.delay!r}")
        if self.error is not None and self.error != "invalid_grant":
            raise FaultSpecError(f"fault 'error' supports only 'invalid_grant', got {self.error!r}")
        if self.malformed is not None and self.malformed not in MALFORMED_VARIANTS:
            raise FaultSpecError(
                f"fault 'malformed' must be one of {sorted(MALFORMED_VARIANTS)}, got {self.malformed!r}"
            )
        if self.sub is not None and not self.orphan_source:
            raise FaultSpecError("fault 'sub' only goes with orphan_source")

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        if not isinstance(data, Mapping):
            raise FaultSpecError(f"a fault must be a JSON object, got {type(data).__name__}")
        allowed = {"path", "method", "count", "status", "retry_after", "delay", "error", "malformed"}
        allowed |= {"orphan_source", "sub"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise FaultSpecError(f"unknown fault field(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**dict(data))

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and self._regex.search(path) is not None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and not k.startswith("_")}


class FaultRegistry:
    """The live rules (in memory, thread-safe: tests add rules while the server thread serves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first matching request fault, counted as fired (toggles are not request faults)."""
        with self._lock:
            for rule in self._rules:
                if rule.orphan_source or not rule.matches(method, path):
                    continue
                rule.fired += 1
                if rule.count is not None and rule.fired >= rule.count:
                    self._rules.remove(rule)
                return rule
        return None

    def orphan_source_for(self, sub: str) -> bool:
        with self._lock:
            return any(r.orphan_source and r.sub in (None, sub) for r in self._rules)


def google_error(status: int, message: str, reason: str | None = None) -> bytes:
    """Google's JSON error envelope."""
    name = STATUS_NAMES.get(status, "UNKNOWN")
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason or name.lower()}],
            "status": name,
        }
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def corrupt_dataset(body: dict[str, Any], variant: str) -> bytes:
    """Break a dataset page the way a ``malformed`` fault asks for."""
    points = body.get("point") or []
    first = points[0] if points else None
    if variant == "not_json":
        return orjson.dumps(body)[: max(1, len(orjson.dumps(body)) // 2)]
    if variant == "missing_fields":
        for key in ("dataSourceId", "minStartTimeNs", "maxEndTimeNs"):
            body.pop(key, None)
        if first:
            first.pop("endTimeNanos", None)
    elif variant == "bad_nanos" and first:
        first["startTimeNanos"] = "abc"
    elif variant == "wrong_value_type" and first:
        value = first["value"][0]
        key = "fpVal" if "fpVal" in value else "intVal"
        value[key] = str(value[key])
    elif variant == "missing_value" and first:
        first.pop("value", None)
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def _status_body(path: str, status: int) -> tuple[bytes, str]:
    if path.startswith("/fhir"):
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "transient", "diagnostics": f"sandbox fault: HTTP {status}"}
            ],
        }
        return orjson.dumps(outcome), "application/fhir+json"
    if path.startswith(HEALTH_PREFIX):  # Google Health v4: google.rpc.Status with an ErrorInfo reason
        return health_fault_body(status), "application/json; charset=UTF-8"
    messages = {
        429: "Quota exceeded for quota metric 'Queries' (sandbox fault).",
        503: "The service is currently unavailable.",
    }
    message = messages.get(
        status, "Internal error encountered." if status >= 500 else "Request failed (sandbox fault)."
    )
    return google_error(status, message), "application/json; charset=UTF-8"


class FaultMiddleware:
    """Applies the registry's request faults; ``malformed`` is handed to the handler via request.state."""

    def __init__(self, app: ASGIApp, registry: FaultRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        rule = self.registry.take(scope["method"], path)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.status is not None:
            body, content_type = _status_body(path, rule.status)
            headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
            if rule.retry_after is not None:
                headers.append((b"retry-after", str(rule.retry_after).encode()))
            await _send(send, rule.status, headers, body)
            return
        if rule.error == "invalid_grant":
            body = orjson.dumps(
                {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            )
            await _send(send, 400, [(b"content-type", b"application/json; charset=utf-8")], body)
            return
        if rule.malformed:
            scope.setdefault("state", {})["sandbox_malformed"] = rule.malformed
        await self.app(scope, receive, send)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
