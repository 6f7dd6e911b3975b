"""The MedTech templates the converter uses: the configured files, or generated from the catalog."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from ..fitmapping.template_generation import generate_templates
from ..googlefit.catalog import sample_data_sources
from ..healthmapping.health_templates import with_health_templates
from ..medtech.device_templates import DeviceMapping, load_device_mapping
from ..medtech.fhir_templates import FhirMapping, load_fhir_mapping
from ..settings import Settings
from ..stores.archive import Archive
from .step_stores import StepStores

DEVICE_OBJECT = "medtech_templates/devicecontent.json"
FHIR_OBJECT = "medtech_templates/fhirmapping.json"


def _read_json(path: str, variable: str) -> dict[str, Any]:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{variable}: {path} is not valid JSON: {exc}") from exc


def build_templates(settings: Settings) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(device mapping, FHIR mapping, where they came from); both are validated by loading them."""
    if settings.device_mapping_file:
        device = _read_json(settings.device_mapping_file, "FITONFHIR_DEVICE_MAPPING")
        fhir = _read_json(settings.fhir_mapping_file, "FITONFHIR_FHIR_MAPPING")
        origin = f"files {settings.device_mapping_file}, {settings.fhir_mapping_file}"
    else:
        # Catch-alls: a stream absent from the catalog's sources (FITONFHIR_STREAMS=all) still converts.
        catch_all = settings.template_style == "standard"
        device, fhir = generate_templates(
            sample_data_sources(), style=settings.template_style, catch_all=catch_all
        )
        device, fhir = with_health_templates(device, fhir)  # issue 13: Google Health days convert too
        origin = f"generated, style {settings.template_style}"
    load_device_mapping(device)
    load_fhir_mapping(fhir)
    return device, fhir, origin


def templates_digest(device: dict[str, Any], fhir: dict[str, Any]) -> str:
    """A short, stable hash of a template pair: the version an import used, shown in the catalog."""
    canonical = orjson.dumps([device, fhir], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def store_templates(archive: Archive, device: dict[str, Any], fhir: dict[str, Any]) -> None:
    archive.put(DEVICE_OBJECT, orjson.dumps(device, option=orjson.OPT_INDENT_2))
    archive.put(FHIR_OBJECT, orjson.dumps(fhir, option=orjson.OPT_INDENT_2))


def load_templates(stores: StepStores) -> tuple[dict[str, Any], dict[str, Any]] | None:
    device, fhir = stores.archive.get(DEVICE_OBJECT), stores.archive.get(FHIR_OBJECT)
    if device is None or fhir is None:
        return None
    return orjson.loads(device), orjson.loads(fhir)


def templates_for_conversion(stores: StepStores) -> tuple[DeviceMapping, FhirMapping]:
    """The stored templates, compiled once per run; generated and stored first when medtech_templates was
    never materialized (e.g. runs launched by the users_sensor on a fresh instance)."""
    stored = load_templates(stores)
    if stored is None:
        device, fhir, _ = build_templates(stores.settings)
        store_templates(stores.archive, device, fhir)
        stored = device, fhir
    return load_device_mapping(stored[0]), load_fhir_mapping(stored[1])


def stored_templates_digest(stores: StepStores) -> str | None:
    """The :func:`templates_digest` of the stored templates (what this run converts with), if any."""
    stored = load_templates(stores)
    return templates_digest(*stored) if stored is not None else None
