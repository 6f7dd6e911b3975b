"""The ``fitonfhir`` command. Each area owns its sub-commands; they load only when used.

The product's own commands are listed here. The other packages of the distribution (the onboarding app,
the sandbox and its demo tooling) add theirs through the ``fitonfhir.commands`` entry-point group, so the
product never imports them. An entry named ``group.command`` adds ``command`` to the product's ``group``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points, version
from typing import Any

import click

PLUGIN_GROUP = "fitonfhir.commands"
DISTRIBUTION = "fitonfhir-dagster"


def load_command(target: str) -> click.Command:
    """The click command at ``module:attribute``."""
    module, attr = target.split(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


def plugin_commands(prefix: str) -> dict[str, str]:
    """Entry-point commands directly under ``prefix`` (``""``: top level, ``"users."``: in ``users``)."""
    found: dict[str, str] = {}
    for entry in entry_points(group=PLUGIN_GROUP):
        rest = entry.name.removeprefix(prefix)
        if entry.name.startswith(prefix) and "." not in rest:
            found[rest] = entry.value
    return found


class PluginGroup(click.Group):
    """A click group whose commands load on first use: its own, plus the plugins registered for it."""

    def __init__(
        self, *args: Any, plugin_prefix: str = "", lazy: dict[str, str] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.plugin_prefix = plugin_prefix
        self.lazy = lazy or {}

    def _targets(self) -> dict[str, str]:
        return {**plugin_commands(self.plugin_prefix), **self.lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._targets()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._targets():
            command = load_command(self._targets()[cmd_name])
        return command


@click.group(
    cls=PluginGroup,
    lazy={
        "users": "fitonfhir_dagster.cli.users_command:users",
        "templates": "fitonfhir_dagster.cli.templates_command:templates",
        "medtech": "fitonfhir_dagster.cli.medtech_command:medtech",
    },
)
@click.version_option(version(DISTRIBUTION), prog_name="fitonfhir")
def main() -> None:
    """Fit on FHIR: import Google Fit data into a FHIR R4 server with Dagster."""
