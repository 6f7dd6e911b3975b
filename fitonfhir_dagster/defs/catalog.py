"""What the catalog shows for every asset: owners, tags, code references, definition metadata."""

from __future__ import annotations

import inspect
from typing import Any

import dagster as dg

from ..settings import Settings

OWNERS = ["team:fit-on-fhir"]
# Every asset of this project holds or derives from a patient's health data.
TAGS = {"data_domain": "health", "contains_phi": "true"}


def code_reference(obj: Any) -> dict[str, dg.MetadataValue]:
    """``dagster/code_references`` pointing at ``obj``'s source (shown as "Code" in the asset page)."""
    path = inspect.getsourcefile(obj) or ""
    line = inspect.getsourcelines(obj)[1]
    refs = dg.CodeReferencesMetadataValue(
        code_references=[dg.LocalFileCodeReference(file_path=path, line_number=line)]
    )
    return {"dagster/code_references": refs}


def archive_location(settings: Settings) -> str:
    if settings.azure_blob_endpoint or settings.azure_storage_connection_string:
        return f"Azure Blob container {settings.azure_blob_container}"
    return str(settings.home / "archive")


def definition_metadata(settings: Settings) -> dict[str, Any]:
    """Where this deployment reads and writes, as configured (never a secret)."""
    templates = (
        f"files {settings.device_mapping_file}, {settings.fhir_mapping_file}"
        if settings.device_mapping_file
        else f"generated, style {settings.template_style}"
    )
    return {
        "fhir_base_url": dg.MetadataValue.url(settings.fhir_url),
        "archive_location": archive_location(settings),
        "templates": templates,
        "streams": settings.stream_policy,
        "identity_mode": settings.identity_mode,
        "event_hub": settings.eventhub_name
        if settings.eventhub_enabled
        else "off (device messages archived only)",
    }
