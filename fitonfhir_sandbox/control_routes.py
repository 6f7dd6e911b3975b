"""The sandbox-only control API under ``/_sandbox`` (faults, revocation, settings, clock, request tally).

It exists only in the sandbox, which binds only to loopback; each call is also refused unless the
peer address is a loopback address. A web page the developer visits could still reach it through the
browser: a cross-site "simple" POST (form or text/plain fetch) or a DNS-rebound name resolving to
127.0.0.1. So calls must also name a loopback Host, carry no foreign Origin, and POST JSON (which a
cross-site page can only send after a CORS preflight this API never grants).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fitonfhir_sandbox.accounts import InvalidEmail, sub_for_email
from fitonfhir_sandbox.context import GoogleSandbox
from fitonfhir_sandbox.faults import CONTROL_PREFIX, FaultRule, FaultSpecError

_SUB_RE = re.compile(r"^[0-9]{1,32}$")


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _hostname(authority: str) -> str | None:
    """The host of ``host[:port]`` or ``[v6]:port`` (lower-cased), None when it is anything else."""
    if not authority or any(c in authority for c in "@/?#\\"):
        return None
    try:
        return urlsplit("//" + authority).hostname
    except ValueError:
        return None


def _origin_hostname(origin: str) -> str | None:
    scheme, sep, authority = origin.partition("://")
    return _hostname(authority) if sep and scheme in ("http", "https") else None


def _browser_refusal(request: Request) -> tuple[int, str] | None:
    """Why a request that a foreign web page could have made is refused, or None."""
    host = request.headers.get("host", "")
    if not is_loopback(_hostname(host)):
        return 403, f"the sandbox control API only answers requests for a loopback host, not {host!r}"
    origin = request.headers.get("origin")
    if origin is not None and not is_loopback(_origin_hostname(origin)):
        return 403, f"the sandbox control API refuses cross-site requests (Origin {origin!r})"
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and media_type != "application/json":
        return 415, "POST to the sandbox control API needs 'Content-Type: application/json'"
    return None


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise FaultSpecError(f"request body is not valid JSON: {exc}") from exc


class ControlRoutes:
    def __init__(self, ctx: GoogleSandbox) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(CONTROL_PREFIX + "/faults", self._guard(self.add_faults), methods=["POST"]),
            Route(CONTROL_PREFIX + "/faults", self._guard(self.list_faults), methods=["GET"]),
            Route(CONTROL_PREFIX + "/faults", self._guard(self.clear_faults), methods=["DELETE"]),
            Route(CONTROL_PREFIX + "/users/{sub}/revoke", self._guard(self.revoke_user), methods=["POST"]),
            Route(CONTROL_PREFIX + "/accounts", self._guard(self.account), methods=["GET"]),
            Route(CONTROL_PREFIX + "/settings", self._guard(self.settings), methods=["GET", "POST"]),
            Route(CONTROL_PREFIX + "/clock", self._guard(self.clock), methods=["POST"]),
            Route(CONTROL_PREFIX + "/requests", self._guard(self.requests), methods=["GET"]),
        ]

    @staticmethod
    def _guard(handler: Any) -> Any:
        async def guarded(request: Request) -> Response:
            if not is_loopback(request.client.host if request.client else None):
                return _problem(403, "the sandbox control API only answers loopback clients")
            refusal = _browser_refusal(request)
            if refusal is not None:
                return _problem(*refusal)
            try:
                result: Response = await handler(request)
            except FaultSpecError as exc:
                return _problem(400, str(exc))
            return result

        return guarded

    async def add_faults(self, request: Request) -> Response:
        body = await _json_body(request)
        specs = body["rules"] if isinstance(body, dict) and "rules" in body else [body]
        if not isinstance(specs, list) or not specs:
            raise FaultSpecError("'rules' must be a non-empty list of fault objects")
        rules = [FaultRule.from_json(spec) for spec in specs]  # validate all before adding any
        for rule in rules:
            self.ctx.faults.add(rule)
        return JSONResponse({"rules": [r.to_json() for r in rules]}, status_code=201)

    async def list_faults(self, request: Request) -> Response:
        return JSONResponse({"rules": [r.to_json() for r in self.ctx.faults.rules()]})

    async def clear_faults(self, request: Request) -> Response:
        self.ctx.faults.clear()
        return Response(status_code=204)

    async def revoke_user(self, request: Request) -> Response:
        sub = request.path_params["sub"]
        if not _SUB_RE.match(sub):
            return _problem(400, f"sub must be the numeric Google subject id, got {sub!r}")
        return JSONResponse({"sub": sub, "revoked_grants": self.ctx.state.revoke_sub(sub)})

    async def account(self, request: Request) -> Response:
        email = request.query_params.get("email", "")
        try:
            return JSONResponse({"email": email.strip().lower(), "sub": sub_for_email(email)})
        except InvalidEmail as exc:
            return _problem(400, str(exc))

    async def settings(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _json_body(request)
            if not isinstance(body, dict) or set(body) - {"rotate_refresh_tokens"}:
                raise FaultSpecError("settings accept only {'rotate_refresh_tokens': true|false}")
            value = body.get("rotate_refresh_tokens", self.ctx.rotate_refresh_tokens)
            if not isinstance(value, bool):
                raise FaultSpecError(f"'rotate_refresh_tokens' must be true or false, got {value!r}")
            self.ctx.rotate_refresh_tokens = value
        return JSONResponse({"rotate_refresh_tokens": self.ctx.rotate_refresh_tokens})

    async def requests(self, request: Request) -> Response:
        """Requests answered so far, by method and first path segment (never reset: take differences)."""
        return JSONResponse({"counts": self.ctx.requests.counts()})

    async def clock(self, request: Request) -> Response:
        body = await _json_body(request)
        seconds = body.get("advance_seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise FaultSpecError(f"'advance_seconds' must be a number >= 0, got {seconds!r}")
        self.ctx.clock.advance(float(seconds))
        return JSONResponse({"now": self.ctx.clock()})
