"""``fitonfhir onboarding serve``: run the onboarding web app with uvicorn."""

from __future__ import annotations

import click


@click.group()
def onboarding() -> None:
    """The onboarding web app where patients authorize Google Fit access."""


@onboarding.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Serve the onboarding app (FITONFHIR_ONBOARDING_URL must be the URL browsers reach it at)."""
    import uvicorn

    from fitonfhir_dagster.settings import ONBOARDING, Settings

    from .app import create_app
    from .serving import server_config

    settings = Settings.from_env(consumer=ONBOARDING)
    app = create_app(settings)
    click.echo(f"onboarding app on http://{host}:{port} (public URL {settings.onboarding_url})")
    uvicorn.Server(server_config(app, host, port)).run()
