"""Google Health API v4 (``users/{user}/identity``, ``dataTypes/{type}/dataPoints`` list and ``:reconcile``).

Wire format from the discovery document (health.v4.json, revision 20261030): kebab-case types in the path,
AIP-160 ``filter`` on the type's time field (only ``>=``/``<`` joined by ``AND``, as documented), ``pageSize``
(default 1440, values above 10000 truncated), ``pageToken``/``nextPageToken``, newest first, int64 as strings,
errors as ``google.rpc.Status`` with an ``ErrorInfo`` reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, date, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fitonfhir_dagster.googlehealth.health_catalog import TYPES, HealthType

from . import health_synthetic
from .context import GoogleSandbox
from .google_state import TokenInfo
from .health_errors_wire import health_error
from .oauth_routes import HEALTH_SCOPES, bearer

PREFIX = "/v4/users/{user_id}"
_JSON = "application/json; charset=UTF-8"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 1440, 10_000
_CLAUSE = re.compile(r'^\s*([a-z_]+)\.([a-z_.]+)\s*(>=|<)\s*"([^"]*)"\s*$')


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_INDENT_2), media_type=_JSON)


def _error(code: int, message: str, reason: str, status: str | None = None) -> Response:
    return Response(health_error(code, message, reason, status), status_code=code, media_type=_JSON)


class FilterError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _bound(health_type: HealthType, literal: str) -> int:
    """A filter literal as epoch ms; daily types take ``YYYY-MM-DD``, the others RFC 3339."""
    try:
        if health_type.kind == "daily":
            day = date.fromisoformat(literal)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        if "T" not in literal:
            raise ValueError(literal)
        moment = datetime.fromisoformat(literal)
        if moment.tzinfo is None:
            raise ValueError(literal)
        return int(moment.timestamp() * 1000)
    except ValueError:
        expected = "an ISO 8601 date YYYY-MM-DD" if health_type.kind == "daily" else "an RFC-3339 timestamp"
        raise FilterError(
            "INVALID_DATA_POINT_FILTER_TIMESTAMP",
            f"Invalid literal {literal!r} in filter: expected {expected}.",
        ) from None


def parse_filter(health_type: HealthType, text: str) -> tuple[int | None, int | None]:
    """``[low, high)`` in epoch ms on the type's documented time field; anything else is Google's 400."""
    low = high = None
    if not text.strip():
        return low, high
    field = health_type.time_field
    for clause in re.split(r"\s+AND\s+", text.strip()):
        match = _CLAUSE.match(clause)
        if not match:
            raise FilterError("INVALID_DATA_POINT_FILTER_SYNTAX", f"Invalid filter clause: {clause!r}.")
        name, path, op, literal = match.groups()
        if f"{name}.{path}" != field:
            raise FilterError(
                "INVALID_DATA_POINT_FILTER_FIELD",
                f"Unsupported filter field '{name}.{path}' for data type '{health_type.name}'; expected '{field}'.",
            )
        if op == ">=":
            low = _bound(health_type, literal)
        else:
            high = _bound(health_type, literal)
    return low, high


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _page_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([offset, fingerprint]).encode()).decode().rstrip("=")


def _offset(token: str, fingerprint: str) -> int:
    try:
        offset, fp = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if fp == fingerprint and isinstance(offset, int) and offset >= 0:
            return offset
    except (binascii.Error, ValueError, TypeError):
        pass
    raise FilterError("INVALID_PAGE_TOKEN", "The page token is invalid or was issued for another request.")


def corrupt(body: dict[str, Any], health_type: HealthType, variant: str) -> bytes:
    """A Health page broken the way a ``malformed`` fault asks (the Fit variants, Health fields)."""
    points = body.get("dataPoints") or []
    first = points[0].get(health_type.member) if points else None
    if variant == "not_json":
        text = orjson.dumps(body)
        return text[: max(1, len(text) // 2)]
    if first is not None:
        if variant == "missing_value":
            first.pop(health_type.value_field, None)
        elif variant == "wrong_value_type":
            first[health_type.value_field] = "abc"
        elif variant in ("bad_nanos", "missing_fields"):
            for key in ("sampleTime", "interval", "date"):
                if key in first:
                    first[key] = {"physicalTime": "abc"} if variant == "bad_nanos" else {}
    return orjson.dumps(body)


class HealthRoutes:
    def __init__(self, ctx: GoogleSandbox) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX + "/identity", self.identity, methods=["GET"]),
            Route(PREFIX + "/dataTypes/{data_type}/dataPoints", self.list_points, methods=["GET"]),
            Route(PREFIX + "/dataTypes/{data_type}/dataPoints:reconcile", self.reconcile, methods=["GET"]),
        ]

    def _caller(self, request: Request, scope: str | None) -> TokenInfo | Response:
        info = bearer(self.ctx, request)
        if isinstance(info, Response):
            return info
        granted = set(info.grant.scope.split())
        if not granted & HEALTH_SCOPES or (scope is not None and scope not in granted):
            needed = scope or "a googlehealth scope"
            return _error(
                403,
                f"Request had insufficient authentication scopes: {needed} is required.",
                "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
            )
        user_id = request.path_params["user_id"]
        if user_id not in ("me", health_synthetic.health_user_id(info.grant.sub)):
            return _error(403, f"The caller may not read data of user '{user_id}'.", "PERMISSION_DENIED")
        if not health_synthetic.is_linked(info.grant.email):
            return _error(
                400,
                "The account is not linked to Google Health.",
                "ACCOUNT_NOT_LINKED",
                "FAILED_PRECONDITION",
            )
        return info

    async def identity(self, request: Request) -> Response:
        info = self._caller(request, None)
        if isinstance(info, Response):
            return info
        user_id = health_synthetic.health_user_id(info.grant.sub)
        return _json({"name": "users/me/identity", "healthUserId": user_id, "legacyUserId": user_id[-9:]})

    async def list_points(self, request: Request) -> Response:
        return self._points(request, "list")

    async def reconcile(self, request: Request) -> Response:
        return self._points(request, "reconcile")

    def _points(self, request: Request, view: str) -> Response:
        type_name = request.path_params["data_type"]
        health_type = TYPES.get(type_name)
        if health_type is None:
            return _error(
                404, f"Data type '{type_name}' is not supported by the sandbox.", "DATA_TYPE_NOT_FOUND"
            )
        info = self._caller(request, health_type.scope)
        if isinstance(info, Response):
            return info
        query = request.query_params
        raw_size = query.get("pageSize") or str(DEFAULT_PAGE_SIZE)
        if not raw_size.isdigit() or int(raw_size) < 1:
            return _error(400, f"Invalid pageSize {raw_size!r}: a positive integer.", "INVALID_PAGE_SIZE")
        page_size = min(int(raw_size), MAX_PAGE_SIZE)
        text = query.get("filter", "")
        fingerprint = _fingerprint(view, type_name, text, query.get("dataSourceFamily", ""))
        try:
            low, high = parse_filter(health_type, text)
            offset = _offset(query["pageToken"], fingerprint) if query.get("pageToken") else 0
        except FilterError as exc:
            return _error(400, str(exc), exc.reason)
        newest_first = self._matching(info, health_type, low, high)
        page = newest_first[offset : offset + page_size]
        body: dict[str, Any] = {
            "dataPoints": [health_synthetic.data_point(health_type, p, view) for p in page]
        }
        if offset + page_size < len(newest_first):
            body["nextPageToken"] = _page_token(offset + page_size, fingerprint)
        malformed = getattr(request.state, "sandbox_malformed", None)
        if malformed:
            return Response(corrupt(body, health_type, malformed), media_type=_JSON)
        return _json(body)

    def _matching(
        self, info: TokenInfo, health_type: HealthType, low: int | None, high: int | None
    ) -> list[health_synthetic.HealthTruth]:
        now_ms = int(self.ctx.clock() * 1000)
        day_ms = 86_400_000
        first = max(
            (low if low is not None else 0) // day_ms,
            (health_synthetic.synthetic.DATA_START - date(1970, 1, 1)).days,
        )
        last = (min(high, now_ms) if high is not None else now_ms) // day_ms
        found = []
        for day in range(last, first - 1, -1):
            for point in reversed(health_synthetic.day_points(info.grant.sub, health_type.name, day)):
                start, end, _seq, _member, _origin, visible = point
                if (
                    (low is None or start >= low)
                    and (high is None or start < high)
                    and visible <= now_ms
                    and end <= now_ms
                ):
                    found.append(point)
        return found
