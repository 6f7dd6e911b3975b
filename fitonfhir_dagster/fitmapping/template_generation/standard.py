"""Standards-coded templates: the original's device side, FHIR side coded with LOINC and UCUM.

Device templates keep the original's message contract (same typeName, values, JmesPath timestamp and
enum lookups) with one stricter rule: the type match compares the whole ``dataSourceId`` against the
source's own ``dataStreamId`` (anchored, dots literal, device uid wildcarded) instead of testing each
name component as an unanchored regex. The original rule lets the ``merge_heart_rate_bpm`` template
also match Google's ``resting_heart_rate<-merge_heart_rate_bpm`` stream, so every resting heart rate
point was imported twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fitonfhir_dagster.fitmapping.template_generation import original
from fitonfhir_dagster.fitmapping.template_generation.coding import (
    FieldCoding,
    TypeCoding,
    google_field_coding,
    google_type_coding,
    type_coding_for,
)
from fitonfhir_dagster.fitmapping.template_generation.sources import DataSource
from fitonfhir_dagster.googlefit.catalog import ENUMS, Field

_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}/")
UID_WILDCARD = "[^:]*"


def regex_literal(text: str) -> str:
    """Escape ``text`` for a regex inside a JSONPath ``/.../`` literal (.NET and Python agree on these)."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def stream_pattern(source: DataSource) -> str:
    """The source's dataStreamId as a regex body with the device uid segment wildcarded."""
    segments: list[str | None] = list(source.stream_id.split(":"))
    uid = source.uid.strip()
    if uid:
        # The uid sits before the stream name: search from the end, never the stream name itself.
        for i in range(len(segments) - 2, -1, -1):
            if segments[i] == uid:
                segments[i] = None
                break
    return ":".join(UID_WILDCARD if s is None else regex_literal(s) for s in segments)


def type_match_expression(data_type_name: str, patterns: list[str]) -> str:
    body = patterns[0] if len(patterns) == 1 else "(?:" + "|".join(patterns) + ")"
    return f"$..[?(@dataTypeName == '{data_type_name}' && $.Body.dataSourceId =~ /^{body}$/)]"


def device_templates(sources: list[DataSource]) -> list[tuple[DataSource, dict[str, Any]]]:
    """One template per source; sources sharing a typeName share one anchored alternation."""
    patterns: dict[str, list[str]] = {}
    for source in sources:
        group = patterns.setdefault(source.type_name.casefold(), [])
        pattern = stream_pattern(source)
        if pattern not in group:
            group.append(pattern)
    return [
        (
            source,
            original.device_template(
                source, type_match_expression(source.data_type_name, patterns[source.type_name.casefold()])
            ),
        )
        for source in sources
    ]


CATCH_ALL_TYPE = "any"


def catch_all_templates(sources: list[DataSource]) -> list[tuple[DataSource, dict[str, Any], dict[str, Any]]]:
    """Per data type, a template for the streams no exact template names (e.g. a source created through
    the REST API with neither package nor device): typeName ``any:<data type>``.

    MedTech runs every template of a CollectionContent on every message (CollectionContentTemplate
    ``GetMeasurements`` is a SelectMany), so order alone cannot make exact matches win: the catch-all
    excludes every exact pattern of its type with a negative lookahead, and comes after them.
    """
    by_type: dict[str, list[DataSource]] = {}
    for source in sources:
        by_type.setdefault(source.data_type_name, []).append(source)
    out = []
    for data_type, group in by_type.items():
        patterns = list(dict.fromkeys(stream_pattern(s) for s in group))
        source = replace(
            group[0],
            stream_id=f"{CATCH_ALL_TYPE}:{data_type}",
            type=CATCH_ALL_TYPE,
            package_name="",
            manufacturer="",
            model="",
            uid="",
            stream_name="",
        )
        type_match = (
            f"$..[?(@dataTypeName == '{data_type}'"
            f" && $.Body.dataSourceId =~ /^(?!(?:{'|'.join(patterns)})$)/)]"
        )
        out.append((source, original.device_template(source, type_match), fhir_template(source)))
    return out


def fhir_template(source: DataSource) -> dict[str, Any]:
    """One CodeValueFhir template with standard codes where known, the Google name always kept."""
    coding = type_coding_for(source.data_type_name, source.stream_name) or _generic_coding(source)
    type_code = google_type_coding(source.data_type_name)
    template: dict[str, Any] = {"typeName": source.type_name, "periodInterval": coding.period_interval}
    category = coding.category_json()
    if category is not None:
        template["category"] = category
    template["codes"] = [c.to_json() for c in (*coding.codes, type_code)]
    components = []
    for field in source.fields:
        if field.name == coding.value_field:
            template["value"] = _value(field, coding.fields.get(field.name))
        else:
            components.append(_component(source, field, coding.fields.get(field.name)))
    if components:
        template["components"] = components
    return {"templateType": "CodeValueFhir", "template": template}


def _generic_coding(source: DataSource) -> TypeCoding:
    """Unknown data types: Google name as code, sole field as value, no unit (as the original)."""
    value_field = source.fields[0].name if len(source.fields) == 1 else None
    return TypeCoding(codes=(), category=None, value_field=value_field)


def _value(field: Field, field_coding: FieldCoding | None) -> dict[str, Any]:
    value = original.fhir_value(field)
    if value["valueType"] == "Quantity" and field_coding is not None:
        value.update(field_coding.unit.to_json())
    return value


def _component(source: DataSource, field: Field, field_coding: FieldCoding | None) -> dict[str, Any]:
    codes = list(field_coding.codes) if field_coding is not None else []
    if not codes and field.name in ENUMS:
        codes.append(google_field_coding(field.name))
    codes.append(google_type_coding(f"{source.data_type_name}.{field.name}"))
    return {"codes": [c.to_json() for c in codes], "value": _value(field, field_coding)}
