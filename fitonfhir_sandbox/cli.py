"""Commands of the sandbox and its demo tooling: ``fitonfhir sandbox``, ``demo``, ``users add-sandbox``.

Registered through the ``fitonfhir.commands`` entry points (pyproject.toml), so the product never imports them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import click

from fitonfhir_dagster.settings import SANDBOX_CLIENT_ID, Settings


@click.command()
@click.option(
    "--host", default=None, help="Loopback address to bind (default: host of FITONFHIR_SANDBOX_URL)."
)
@click.option("--port", type=int, default=None, help="Port (default: port of FITONFHIR_SANDBOX_URL, 8765).")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (default: $FITONFHIR_HOME/sandbox).",
)
@click.option("--rotate-refresh-tokens", is_flag=True, help="Return a new refresh token on every refresh.")
def sandbox(host: str | None, port: int | None, home: Path | None, rotate_refresh_tokens: bool) -> None:
    """Run the local Google (OAuth + Fit REST) and FHIR stand-ins on loopback."""
    from fitonfhir_sandbox.context import ClientSpec
    from fitonfhir_sandbox.sandbox_app import NotLoopback, base_url_for, check_loopback, serve

    settings = Settings.from_env()
    configured = urlsplit(settings.sandbox_url)
    host = host or configured.hostname or "127.0.0.1"
    port = port or configured.port or 8765
    try:
        check_loopback(host)
    except NotLoopback as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from exc
    same = (configured.hostname, configured.port) == (host, port)
    url = settings.sandbox_url if same else base_url_for(host, port)
    home = (home or settings.home / "sandbox").resolve()
    clients: tuple[ClientSpec, ...] = ()
    if settings.google_client_id != SANDBOX_CLIENT_ID:
        clients = (ClientSpec(settings.google_client_id, settings.google_client_secret),)
    click.echo(f"Fit on FHIR sandbox (state in {home})")
    click.echo(f"  Google OAuth authorize  {url}/o/oauth2/v2/auth")
    click.echo(f"  Google OAuth token      {url}/token")
    click.echo(f"  Google OAuth revoke     {url}/revoke")
    click.echo(f"  OpenID configuration    {url}/.well-known/openid-configuration")
    click.echo(f"  Google Fit REST v1      {url}/fitness/v1/")
    click.echo(f"  FHIR R4                 {url}/fhir")
    click.echo(f"  Control API             {url}/_sandbox/faults")
    click.echo(f"  OAuth client            {SANDBOX_CLIENT_ID} / (secret from config)")
    serve(home, host, port, base_url=url, clients=clients, rotate_refresh_tokens=rotate_refresh_tokens)


@click.command("add-sandbox")
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 1000))
def add_sandbox(count: int) -> None:
    """Onboard COUNT sandbox accounts through the real OAuth code flow (onboarding app + sandbox consent)."""
    from .local_services import local_services
    from .onboarding_driver import onboard_sandbox_user

    settings = Settings.from_env()
    if not settings.uses_sandbox:
        raise click.UsageError("add-sandbox needs the sandbox: unset FITONFHIR_GOOGLE_TOKEN_URI and friends")
    with local_services(settings) as running:
        for i in range(1, count + 1):
            done = onboard_sandbox_user(running.onboarding_url, i)
            click.echo(f"onboarded {done.email}")


@click.command()
@click.option("--users", "n_users", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--days", "n_days", default=7, show_default=True, type=click.IntRange(1, 60))
@click.option("--dev", is_flag=True, help="After onboarding, keep the sandbox up and start `dagster dev`.")
@click.option(
    "--source",
    type=click.Choice(["google-fit", "google-health"]),
    default="google-fit",
    show_default=True,
    help="Onboard the users for Google Fit or for the Google Health API (v4).",
)
def demo(n_users: int, n_days: int, dev: bool, source: str) -> None:
    """Onboard sandbox users, import their last days through Dagster and print what happened."""
    if source != "google-fit":  # read by the onboarding app and the code location alike
        import os

        os.environ["FITONFHIR_DEFAULT_SOURCE"] = source
    if dev:
        from .dev import run_dev

        run_dev(n_users)
        return
    from .demo import print_report, run_demo

    print_report(run_demo(n_users, n_days, echo=click.echo, source=source), echo=click.echo)


@click.command()
@click.option("--users", "n_users", default=3, show_default=True, type=click.IntRange(1, 20))
@click.option("--days", "n_days", default=3, show_default=True, type=click.IntRange(1, 30))
@click.option(
    "--timeout", default=600, show_default=True, type=click.IntRange(30), help="Seconds for the runs."
)
@click.option("--no-webserver", is_flag=True, help="Skip dagster-webserver (saves a process).")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the stack's state (logs, DAGSTER_HOME, archive) in this directory instead of a temp dir.",
)
def stack(n_users: int, n_days: int, timeout: int, no_webserver: bool, keep: Path | None) -> None:
    """Production-shaped Dagster on loopback: PostgreSQL, code server, daemon, webserver as processes;
    onboard sandbox users, let the users_sensor import their history through the run queue, report, stop."""
    import signal

    from .demo import print_report
    from .stack import StackConfig, StackError, run_stack

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the stack's clean-up

    signal.signal(signal.SIGTERM, terminate)
    config = StackConfig(users=n_users, days=n_days, timeout=timeout, webserver=not no_webserver)
    try:
        report = run_stack(config, echo=click.echo, keep=keep.resolve() if keep else None)
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    print_report(report, echo=click.echo)
