"""MedTech template collections with the original generator's uniqueness rule.

A repeated typeName is fine when the template is identical (several devices of one model share a
template, the uid is not part of the name) and is dropped; a repeated typeName with different
content would make MedTech's mapping ambiguous, so it is an error naming both sources.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fitonfhir_dagster.fitmapping.template_generation.sources import DataSource, TemplateGenerationError

DEVICE_COLLECTION = "CollectionContent"
FHIR_COLLECTION = "CollectionFhir"


def unique_templates(kind: str, built: Iterable[tuple[DataSource, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Templates in input order, identical repeats dropped, conflicting repeats rejected."""
    kept: dict[str, tuple[DataSource, dict[str, Any]]] = {}
    for source, template in built:
        key = template["template"]["typeName"].casefold()
        if key not in kept:
            kept[key] = (source, template)
        elif kept[key][1] != template:
            first = kept[key][0]
            raise TemplateGenerationError(
                f"conflicting {kind} templates for type name {template['template']['typeName']!r}: "
                f"{first.label} and {source.label} share the name but differ "
                "(for example in their fields); remove one of them or filter with --include"
            )
    return [template for _, template in kept.values()]


def collection(collection_type: str, templates: list[dict[str, Any]]) -> dict[str, Any]:
    return {"templateType": collection_type, "template": templates}
