"""``fitonfhir templates``: generate MedTech device and FHIR mapping templates from Google data sources."""

from __future__ import annotations

from pathlib import Path

import click

from fitonfhir_dagster.fitmapping.template_generation import (
    STYLES,
    TemplateGenerationError,
    generate_templates,
    read_data_sources_file,
    write_templates,
)


class TemplateInputError(click.ClickException):
    """Bad input: reported as ``Error: ...`` with exit code 2, like click's own usage errors."""

    exit_code = 2


@click.group()
def templates() -> None:
    """MedTech templates (devicecontent.json + fhirmapping.json) for Google Fit data."""


@templates.command()
@click.option(
    "--data-sources",
    "data_sources_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Google 'users/me/dataSources' response ({\"dataSource\": [...]}) or a bare JSON array of sources.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for devicecontent.json and fhirmapping.json (created if missing).",
)
@click.option(
    "--style",
    type=click.Choice(STYLES),
    default="standard",
    show_default=True,
    help="standard: LOINC/UCUM-coded Observations; original: exactly what microsoft/fit-on-fhir generated.",
)
@click.option(
    "--include",
    "include",
    multiple=True,
    help="Regex matched case-insensitively anywhere in dataStreamId; repeat or comma-separate. Default: all.",
)
def generate(data_sources_path: Path, out_dir: Path, style: str, include: tuple[str, ...]) -> None:
    """Write MedTech templates for every (or every included) data source."""
    patterns = [p.strip() for option in include for p in option.split(",") if p.strip()]
    try:
        document = read_data_sources_file(data_sources_path)
    except TemplateGenerationError as exc:
        raise TemplateInputError(str(exc)) from exc
    try:
        device, fhir = generate_templates(document, style, patterns)
    except TemplateGenerationError as exc:
        raise TemplateInputError(f"data sources file {str(data_sources_path)!r}: {exc}") from exc
    try:
        device_path, fhir_path = write_templates(out_dir, device, fhir)
    except OSError as exc:
        raise TemplateInputError(
            f"cannot write templates to {str(out_dir)!r}: {exc.strerror or exc}"
        ) from exc
    click.echo(
        f"Wrote {len(device['template'])} device templates to {device_path} "
        f"and {len(fhir['template'])} FHIR templates to {fhir_path} (style: {style})."
    )
