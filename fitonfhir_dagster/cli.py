"""The ``fitonfhir`` command. Each area owns its sub-commands; they load only when used."""

from __future__ import annotations

import importlib

import click

_SUBCOMMANDS = {
    "sandbox": ("fitonfhir_dagster.sandbox.commands", "sandbox"),
    "users": ("fitonfhir_dagster.commands", "users"),
    "demo": ("fitonfhir_dagster.commands", "demo"),
    "templates": ("fitonfhir_dagster.medtech.template_commands", "templates"),
    "medtech": ("fitonfhir_dagster.medtech.commands", "medtech"),
    "onboarding": ("onboarding_app.commands", "onboarding"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _SUBCOMMANDS:
            return None
        module, attr = _SUBCOMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
def main() -> None:
    """Fit on FHIR: import Google Fit data into a FHIR R4 server with Dagster."""
