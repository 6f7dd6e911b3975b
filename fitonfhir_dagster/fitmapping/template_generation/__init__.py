"""MedTech template generation from Google Fit data sources (``fitonfhir templates generate``).

``generate_templates`` returns the device mapping (``CollectionContent``) and the FHIR destination
mapping (``CollectionFhir``) as JSON objects. Style ``original`` reproduces microsoft/fit-on-fhir's
generator byte for byte; style ``standard`` (default) codes Observations with LOINC, UCUM and
observation categories (see ``coding.py`` and ``standard.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from fitonfhir_dagster.fitmapping.template_generation import original, standard
from fitonfhir_dagster.fitmapping.template_generation.collection import (
    DEVICE_COLLECTION,
    FHIR_COLLECTION,
    collection,
    unique_templates,
)
from fitonfhir_dagster.fitmapping.template_generation.sources import (
    DataSource,
    TemplateGenerationError,
    parse_data_sources,
    read_data_sources_file,
    select_sources,
)

Style = Literal["standard", "original"]
STYLES: tuple[str, ...] = ("standard", "original")
DEVICE_CONTENT_FILE = "devicecontent.json"
FHIR_MAPPING_FILE = "fhirmapping.json"

__all__ = [
    "DEVICE_CONTENT_FILE",
    "FHIR_MAPPING_FILE",
    "STYLES",
    "DataSource",
    "TemplateGenerationError",
    "generate_templates",
    "read_data_sources_file",
    "render_json",
    "write_templates",
]


def generate_templates(
    data_sources: Any, style: Style | str = "standard", include: Sequence[str] = (), catch_all: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(devicecontent, fhirmapping) for a dataSources list response or bare array.

    ``include`` holds regexes matched case-insensitively anywhere in each ``dataStreamId``;
    a source is kept if any matches, all are kept when ``include`` is empty. ``catch_all`` (style
    ``standard`` only) adds one template per data type for streams no exact template names
    (``standard.catch_all_templates``), so that every stream the import may select has a template.
    """
    if style not in STYLES:
        raise TemplateGenerationError(
            f"unknown template style {style!r}; expected one of {', '.join(STYLES)}"
        )
    if isinstance(include, str):
        include = [include]
    sources = select_sources(parse_data_sources(data_sources), include)
    if not sources:
        raise TemplateGenerationError(
            f"no data source matched the include regexes {list(include)!r}; nothing to generate"
        )
    if style == "original":
        built = [(s, original.device_template(s)) for s in sources]
        fhir_built = [(s, original.fhir_template(s)) for s in sources]
    else:
        built = standard.device_templates(sources)
        fhir_built = [(s, standard.fhir_template(s)) for s in sources]
        if catch_all:
            for source, device_template, fhir_template in standard.catch_all_templates(sources):
                built.append((source, device_template))
                fhir_built.append((source, fhir_template))
    devices = unique_templates("device", built)
    fhir = unique_templates("FHIR", fhir_built)
    return collection(DEVICE_COLLECTION, devices), collection(FHIR_COLLECTION, fhir)


def render_json(document: dict[str, Any]) -> str:
    """JSON text laid out like the original's files (2-space indent, no trailing newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False)


def write_templates(out_dir: Path, device: dict[str, Any], fhir: dict[str, Any]) -> tuple[Path, Path]:
    """Write both files into ``out_dir`` (created if missing); each file is replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in ((DEVICE_CONTENT_FILE, device), (FHIR_MAPPING_FILE, fhir)):
        target = out_dir / name
        partial = out_dir / f".{name}.partial"
        partial.write_text(render_json(document), "utf-8")
        partial.replace(target)
        written.append(target)
    return written[0], written[1]
