"""The embedded default, running: sandbox and onboarding app on loopback, a Dagster instance on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import requests

from fitonfhir_dagster.settings import Settings


def sandbox_running(url: str) -> bool:
    try:
        return requests.get(url + "/.well-known/openid-configuration", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def demo_start_date(history_days: int) -> None:
    """Partitions start where the demo users' history starts (unless FITONFHIR_START_DATE is set), so the
    partition health bar reads 100% after the import instead of counting years before anyone joined."""
    first = datetime.now(UTC).date() - timedelta(days=history_days)
    os.environ.setdefault("FITONFHIR_START_DATE", first.isoformat())


def prepare_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME (default FITONFHIR_HOME/dagster) with our instance settings if it has none."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(resources.files(__package__).joinpath("dagster_instance.yaml").read_text("utf-8"))
    return home


@contextmanager
def local_services(settings: Settings, onboarding_port: int = 0) -> Iterator[Settings]:
    """Start the sandbox (unless one already answers at FITONFHIR_SANDBOX_URL) and the onboarding app.

    Yields the settings with the onboarding URL the app actually listens on.
    """
    from onboarding_app.app import create_app
    from onboarding_app.serving import bind_socket, serve_in_background, socket_url

    from .sandbox_app import check_loopback, create_sandbox_app

    with ExitStack() as stack:
        if settings.uses_sandbox and not sandbox_running(settings.sandbox_url):
            parts = urlsplit(settings.sandbox_url)
            host = check_loopback(parts.hostname or "127.0.0.1")
            sock = bind_socket(host, parts.port or 80)
            app = create_sandbox_app(settings.home / "sandbox", settings.sandbox_url)
            stack.enter_context(serve_in_background(app, sock))
        sock = bind_socket("127.0.0.1", onboarding_port)
        running = replace(settings, onboarding_url=socket_url(sock))
        stack.enter_context(serve_in_background(create_app(running), sock))
        yield running
