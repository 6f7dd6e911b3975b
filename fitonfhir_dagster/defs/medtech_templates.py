"""The MedTech templates used by the converter (and to configure a managed MedTech service).

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import dagster as dg

from ..pipeline.conversion_templates import build_templates, store_templates
from .resources import (
    ArchiveResource,
    GoogleFitResource,
    ImportOptionsResource,
    TokenVaultResource,
    UsersTableResource,
    open_ports,
)


@dg.asset(group_name="fit_on_fhir", kinds={"json"})
def medtech_templates(
    context: dg.AssetExecutionContext,
    google_fit: GoogleFitResource,
    import_options: ImportOptionsResource,
    users_table: UsersTableResource,
    token_vault: TokenVaultResource,
    archive: ArchiveResource,
) -> dg.MaterializeResult:
    """Device and FHIR mappings: FITONFHIR_DEVICE_MAPPING/FITONFHIR_FHIR_MAPPING, or generated."""
    ports = open_ports(google_fit, import_options, users_table, token_vault, archive)
    device, fhir, origin = build_templates(ports)
    store_templates(ports, device, fhir)
    return dg.MaterializeResult(
        metadata={
            "origin": origin,
            "device_templates": len(device.get("template", [])),
            "fhir_templates": len(fhir.get("template", [])),
        }
    )
