"""`fitonfhir users ...` and `fitonfhir demo`."""

from __future__ import annotations

import click

from .config import Settings


@click.group()
def users() -> None:
    """Inspect and onboard users."""


@users.command("list")
def list_users() -> None:
    """Print every user: key, state, Patient id (never tokens)."""
    from .stores.factory import open_users_table

    for user in open_users_table(Settings.from_env()).list():
        reason = f" ({user.state_reason})" if user.state_reason else ""
        click.echo(f"{user.key}  {user.state.value:<12} Patient/{user.patient_id}{reason}")


@users.command("add-sandbox")
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 1000))
def add_sandbox(count: int) -> None:
    """Onboard COUNT sandbox accounts through the real OAuth code flow (onboarding app + sandbox consent)."""
    from .local import local_services
    from .sandbox_onboarding import onboard_sandbox_user

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
def demo(n_users: int, n_days: int, dev: bool) -> None:
    """Onboard sandbox users, import their last days through Dagster and print what happened."""
    if dev:
        from .dev import run_dev

        run_dev(n_users)
        return
    from .demo import print_report, run_demo

    print_report(run_demo(n_users, n_days, echo=click.echo), echo=click.echo)
