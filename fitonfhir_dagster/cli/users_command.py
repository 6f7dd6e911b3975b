"""`fitonfhir users ...`: the users table as an operator sees it (never tokens)."""

from __future__ import annotations

import click

from ..settings import Settings
from . import PluginGroup


@click.group(cls=PluginGroup, plugin_prefix="users.")
def users() -> None:
    """Inspect and onboard users."""


@users.command("list")
def list_users() -> None:
    """Print every user: key, state, Patient id (never tokens)."""
    from ..stores.factory import open_users_table

    for user in open_users_table(Settings.from_env()).list():
        reason = f" ({user.state_reason})" if user.state_reason else ""
        click.echo(f"{user.key}  {user.state.value:<12} Patient/{user.patient_id}{reason}")
