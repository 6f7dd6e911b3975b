"""The one sandbox server: the Google emulator at the root and the sandbox FHIR server at ``/fhir``."""

from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fitonfhir_sandbox.context import ClientSpec, GoogleSandbox, RequestTally, SandboxClock
from fitonfhir_sandbox.faults import FaultMiddleware, FaultRegistry
from fitonfhir_sandbox.fhir_server import create_fhir_app
from fitonfhir_sandbox.google_app import create_google_app

FHIR_PREFIX = "/fhir"
log = logging.getLogger("fitonfhir.sandbox")


class NotLoopback(ValueError):
    """The sandbox (and its control API) must never listen beyond this machine."""


def check_loopback(host: str) -> str:
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise NotLoopback(f"the sandbox binds only to loopback (127.0.0.1, ::1 or localhost), not {host!r}")


def base_url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _fhir_app(home: Path) -> ASGIApp:
    app: ASGIApp = create_fhir_app(home / "fhir.sqlite3")
    return app


class _PrefixDispatch:
    """Send ``/fhir`` and ``/fhir/...`` to the FHIR app as a Starlette Mount would (``/fhir`` -> ``/fhir/``,
    so a transaction POST to the base URL works without a redirect); everything else to Google."""

    def __init__(self, fhir: ASGIApp, google: ASGIApp) -> None:
        self.fhir = fhir
        self.google = google

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/")):
            root = scope.get("root_path", "")
            child = dict(scope)
            if path == FHIR_PREFIX:
                child["path"] = FHIR_PREFIX + "/"
                child["raw_path"] = (FHIR_PREFIX + "/").encode()
            child["app_root_path"] = scope.get("app_root_path", root)
            child["root_path"] = root + FHIR_PREFIX
            await self.fhir(child, receive, send)
            return
        await self.google(scope, receive, send)


class _AccessLog:
    """Method, path (never the query string, which may carry tokens), status and time; tallied."""

    def __init__(self, app: ASGIApp, tally: RequestTally) -> None:
        self.app = app
        self.tally = tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.tally.count(scope["method"], scope["path"])
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )


def create_sandbox_app(
    home: Path,
    base_url: str,
    *,
    clients: tuple[ClientSpec, ...] = (),
    rotate_refresh_tokens: bool = False,
    clock: SandboxClock | None = None,
) -> Starlette:
    """Google OAuth + Fit emulator at the root, FHIR at ``/fhir``, faults applied to both.

    State lives under ``home``; ``base_url`` is what clients use (it is the id_token issuer).
    ``app.state.sandbox`` is the :class:`GoogleSandbox` context.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    faults = FaultRegistry()
    google = create_google_app(
        home,
        base_url,
        clients=clients,
        rotate_refresh_tokens=rotate_refresh_tokens,
        faults=faults,
        clock=clock,
    )
    ctx: GoogleSandbox = google.state.sandbox
    app = Starlette()
    app.mount(
        "/", _AccessLog(FaultMiddleware(_PrefixDispatch(_fhir_app(home), google), faults), ctx.requests)
    )
    app.state.sandbox = ctx
    return app


def serve(
    home: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    base_url: str | None = None,
    clients: tuple[ClientSpec, ...] = (),
    rotate_refresh_tokens: bool = False,
) -> None:
    """Run the sandbox in the foreground until interrupted (refuses non-loopback hosts)."""
    check_loopback(host)
    app = create_sandbox_app(
        home,
        base_url or base_url_for(host, port),
        clients=clients,
        rotate_refresh_tokens=rotate_refresh_tokens,
    )
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
