"""`fitonfhir users ...`: the users table as an operator sees it (never tokens)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import click

from ..settings import Settings
from ..stores.users import User
from . import PluginGroup

COLUMNS = ("key", "state", "patient", "onboarded", "state_changed", "last_imported_day", "reason")


@click.group(cls=PluginGroup, plugin_prefix="users.")
def users() -> None:
    """Inspect and onboard users."""


def last_imported_days(keys: Iterable[str]) -> dict[str, str]:
    """The newest UTC day with fhir_observations materialized, per user, from the Dagster instance
    (``DAGSTER_HOME``, default ``FITONFHIR_HOME/dagster``); empty where there is no instance yet."""
    settings_home = Settings.from_env().home
    home = Path(os.environ.get("DAGSTER_HOME") or settings_home / "dagster")
    if not (home / "dagster.yaml").exists() and not (home / "storage").exists():
        return {}
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(home))
    wanted = set(keys)
    newest: dict[str, str] = {}
    with dg.DagsterInstance.get() as instance:
        for partition in instance.get_materialized_partitions(dg.AssetKey("fhir_observations")):
            day, _, user = str(partition).partition("|")
            if user in wanted and day > newest.get(user, ""):
                newest[user] = day
    return newest


def user_row(user: User, last_day: str) -> dict[str, str]:
    return {
        "key": user.key,
        "state": user.state.value,
        "patient": f"Patient/{user.patient_id}",
        "onboarded": user.created_at,
        "state_changed": user.state_changed_at,
        "last_imported_day": last_day,
        "reason": user.state_reason,
    }


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user (NDJSON).")
def list_users(as_json: bool) -> None:
    """Every user: key, state, Patient, onboarding and state-change times, last imported day (never tokens)."""
    from ..stores.factory import open_users_table

    found = open_users_table(Settings.from_env()).list()
    last = last_imported_days(u.key for u in found)
    rows = [user_row(u, last.get(u.key, "")) for u in found]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
    for row in rows:
        click.echo("  ".join(row[c].ljust(widths[c]) for c in COLUMNS).rstrip())
    if not rows:
        click.echo("(no users yet: onboard one with the onboarding app or `fitonfhir users add-sandbox`)")
