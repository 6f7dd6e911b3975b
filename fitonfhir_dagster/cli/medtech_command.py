"""``fitonfhir medtech``: offline MedTech-compatible conversion (a local "mapping debugger")."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click
import orjson

from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.device_templates import load_device_mapping
from fitonfhir_dagster.medtech.fhir_templates import load_fhir_mapping
from fitonfhir_dagster.medtech.identity import CreateIdentity
from fitonfhir_dagster.medtech.medtech_errors import InvalidTemplateException


@click.group()
def medtech() -> None:
    """MedTech-compatible conversion of device messages to FHIR Observations."""


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _read_messages(handle: IO[bytes], name: str) -> tuple[list[Any], list[int]]:
    messages: list[Any] = []
    lines: list[int] = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            messages.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            _fail(f"{name}: line {number}: not valid JSON: {exc}")
        lines.append(number)
    return messages, lines


@medtech.command()
@click.option(
    "--device-mapping", "device_path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--fhir-mapping", "fhir_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device-system", default=None, help="MedTech's default device identifier system, if set.")
@click.option(
    "--with-identities", is_flag=True, help="Also print the Patients and Devices Create mode makes."
)
@click.argument("messages_path", metavar="MESSAGES.ndjson", type=click.Path(dir_okay=False, allow_dash=True))
def convert(
    device_path: Path, fhir_path: Path, device_system: str | None, with_identities: bool, messages_path: str
) -> None:
    """Convert device messages (NDJSON, one message a line; '-' for stdin) to Observations on stdout.

    Ids are MedTech Create mode's, computed offline. Dead letters go to stderr.
    Exit 0: all converted; 1: some dead-lettered; 2: bad templates or input.
    """
    mappings = []
    for path, loader in ((device_path, load_device_mapping), (fhir_path, load_fhir_mapping)):
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"{path}: cannot read: {exc}")
        try:
            mappings.append(loader(text, str(path)))
        except InvalidTemplateException as exc:
            _fail(str(exc))
    if messages_path == "-":
        messages, lines = _read_messages(sys.stdin.buffer, "<stdin>")
    else:
        try:
            with open(messages_path, "rb") as handle:
                messages, lines = _read_messages(handle, messages_path)
        except OSError as exc:
            _fail(f"{messages_path}: cannot read: {exc}")
    converter = Converter(mappings[0], mappings[1], CreateIdentity(device_system))
    result = converter.convert(messages)
    out = sys.stdout.buffer
    if with_identities:
        for resource in [*result.patients, *result.devices]:
            out.write(orjson.dumps(resource) + b"\n")
    for observation in result.observations:
        out.write(orjson.dumps(observation) + b"\n")
    out.flush()
    for letter in result.dead_letters:
        line = lines[letter.message_index] if 0 <= letter.message_index < len(lines) else "?"
        click.echo(
            f"dead letter: {messages_path}: line {line}: {letter.reason}: {letter.error} ({letter.detail})",
            err=True,
        )
    click.echo(
        f"{result.messages} message(s), {result.points_matched} match(es), {result.measurements} measurement(s),"
        f" {len(result.observations)} Observation(s), {len(result.dead_letters)} dead letter(s)",
        err=True,
    )
    sys.exit(1 if result.dead_letters else 0)
