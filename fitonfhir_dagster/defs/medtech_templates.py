"""The MedTech templates used by the converter (and to configure a managed MedTech service).

Its code version is the hash of the templates in use (generated or your files), so a change of
template style, catalog or mapping files shows in the catalog and re-materializes it (automation
condition); the import records the hash it converted with.

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import dagster as dg

from ..pipeline.conversion_templates import build_templates, store_templates, templates_digest
from ..settings import Settings
from .catalog import OWNERS, TAGS, code_reference, definition_metadata
from .resources import ArchiveResource, ImportOptionsResource
from .user_days import GROUP

MEDTECH_TEMPLATES = "medtech_templates"
# Never materialized, or the templates in use differ from the materialized ones; not while a run is at it.
TEMPLATES_CHANGED = (
    dg.AutomationCondition.missing() | dg.AutomationCondition.code_version_changed()
) & ~dg.AutomationCondition.in_progress()


def build_medtech_templates(settings: Settings) -> dg.AssetsDefinition:
    device, fhir, origin = build_templates(settings)
    version = templates_digest(device, fhir)

    @dg.asset(
        name=MEDTECH_TEMPLATES,
        group_name=GROUP,
        kinds={"json"},
        owners=OWNERS,
        tags=TAGS,
        code_version=version,
        automation_condition=TEMPLATES_CHANGED,
        description="MedTech device mapping (devicecontent.json) and FHIR mapping (fhirmapping.json) the"
        " import converts with: FITONFHIR_DEVICE_MAPPING + FITONFHIR_FHIR_MAPPING, or generated.",
        metadata={**definition_metadata(settings), **code_reference(build_medtech_templates)},
    )
    def medtech_templates(
        context: dg.AssetExecutionContext, import_options: ImportOptionsResource, archive: ArchiveResource
    ) -> dg.MaterializeResult:
        device, fhir, origin = build_templates(import_options.settings())
        store_templates(archive.open(), device, fhir)
        return dg.MaterializeResult(
            metadata={
                "origin": origin,
                "template_hash": templates_digest(device, fhir),
                "device_templates": len(device.get("template", [])),
                "fhir_templates": len(fhir.get("template", [])),
            }
        )

    return medtech_templates


@dg.definitions
def medtech_templates_defs() -> dg.Definitions:
    templates = build_medtech_templates(Settings.from_env())
    sensor = dg.AutomationConditionSensorDefinition(
        "medtech_templates_sensor",
        target=dg.AssetSelection.assets(templates),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Materializes medtech_templates when it was never materialized or the templates in use"
        " changed (code version = template hash).",
    )
    return dg.Definitions(assets=[templates], sensors=[sensor])
