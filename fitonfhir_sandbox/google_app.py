"""The Google emulator as one Starlette app: OAuth 2.0 + OpenID keys, Fit REST v1, Health v4, control API."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from fitonfhir_sandbox.context import ClientSpec, GoogleSandbox, SandboxClock
from fitonfhir_sandbox.control_routes import ControlRoutes
from fitonfhir_sandbox.faults import FaultRegistry
from fitonfhir_sandbox.fit_routes import FitRoutes
from fitonfhir_sandbox.health_routes import HealthRoutes
from fitonfhir_sandbox.oauth_routes import OAuthRoutes


def create_google_app(
    home: Path,
    base_url: str,
    *,
    clients: tuple[ClientSpec, ...] = (),
    rotate_refresh_tokens: bool = False,
    faults: FaultRegistry | None = None,
    clock: SandboxClock | None = None,
) -> Starlette:
    """Google's endpoints rooted at ``base_url``; state persists in ``home/google.sqlite3``.

    The app's ``state.sandbox`` is the :class:`GoogleSandbox` (tests reach faults/clock through it).
    Fault rules take effect when the app is wrapped in ``faults.FaultMiddleware`` (server.py does).
    """
    ctx = GoogleSandbox(
        home,
        base_url,
        clients=clients,
        rotate_refresh_tokens=rotate_refresh_tokens,
        faults=faults,
        clock=clock,
    )
    routes = [*OAuthRoutes(ctx).routes(), *FitRoutes(ctx).routes(), *ControlRoutes(ctx).routes()]
    routes += HealthRoutes(ctx).routes()  # Google Health API v4 (issue 13)
    app = Starlette(routes=routes)
    app.state.sandbox = ctx
    return app
