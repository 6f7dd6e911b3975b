"""The original fit-on-fhir mapping generator, rule for rule (reference/original-fit-on-fhir.md 6.2-6.5).

Kept so that existing MedTech deployments can regenerate exactly what they run today: JSONPath type
match with unanchored per-component regexes, end-time timestamps, enum names via a JmesPath lookup,
and FHIR templates coded only with Google data type names (no system, no units).
"""

from __future__ import annotations

from typing import Any

from fitonfhir_dagster.fitmapping.template_generation.sources import DataSource
from fitonfhir_dagster.googlefit.catalog import ENUMS, Field

DEVICE_ID_EXPRESSION = "$.Body.deviceIdentifier"
PATIENT_ID_EXPRESSION = "$.Body.patientIdentifier"
TIMESTAMP_EXPRESSION = "fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `0.000001`)))"


def type_match_expression(source: DataSource) -> str:
    """``$..[?(@dataTypeName == '<type>' && $.Body.dataSourceId =~ /<component>/ ...)]``, original form."""
    parts = (source.type, source.package_name, source.manufacturer, source.model, source.stream_name)
    components = [p for p in parts if p.strip()]
    clauses = [f"@dataTypeName == '{source.data_type_name}'"]
    clauses += [f"$.Body.dataSourceId =~ /{c}/" for c in components]
    return f"$..[?({' && '.join(clauses)})]"


def enum_lookup_expression(value_path: str, names: tuple[str, ...]) -> str:
    """JmesPath mapping the integer at ``value_path`` to its enum name (null when out of range)."""
    rows = ",".join(f'{{"v":@,"n":`{number}`,"s":\'{name}\'}}' for number, name in enumerate(names))
    return f"{value_path} | [{rows}][?v == n].s | @[0]"


def value_expression(index: int, field: Field) -> str | dict[str, str]:
    path = f"matchedToken.value[{index}].{field.value_key}"
    names = ENUMS.get(field.name)
    if names is None:
        return path
    return {"value": enum_lookup_expression(path, names), "language": "JmesPath"}


def device_values(source: DataSource) -> list[dict[str, Any]]:
    values = []
    for index, field in enumerate(source.fields):
        value: dict[str, Any] = {"valueName": field.name, "valueExpression": value_expression(index, field)}
        if not field.optional:
            value["required"] = True
        values.append(value)
    return values


def device_template(source: DataSource, type_match: str | None = None) -> dict[str, Any]:
    """One CalculatedContent template; ``type_match`` lets the standard style swap the match rule."""
    return {
        "templateType": "CalculatedContent",
        "template": {
            "typeMatchExpression": type_match if type_match is not None else type_match_expression(source),
            "deviceIdExpression": DEVICE_ID_EXPRESSION,
            "patientIdExpression": PATIENT_ID_EXPRESSION,
            "timestampExpression": {"value": TIMESTAMP_EXPRESSION, "language": "JmesPath"},
            "values": device_values(source),
            "typeName": source.type_name,
        },
    }


def is_text_value(field: Field) -> bool:
    """String-typed in FHIR: text and map fields, and enum fields (emitted as their names)."""
    return field.format in ("string", "map") or field.name in ENUMS


def fhir_value(field: Field) -> dict[str, str]:
    return {"valueName": field.name, "valueType": "String" if is_text_value(field) else "Quantity"}


def fhir_template(source: DataSource) -> dict[str, Any]:
    """One CodeValueFhir template: code = Google data type name, one value or one component per field."""
    code = source.data_type_name
    template: dict[str, Any] = {"codes": [{"code": code}]}
    if len(source.fields) == 1:
        template["value"] = fhir_value(source.fields[0])
    elif source.fields:
        template["components"] = [
            {"codes": [{"code": f"{code}.{field.name}"}], "value": fhir_value(field)}
            for field in source.fields
        ]
    template["typeName"] = source.type_name
    return {"templateType": "CodeValueFhir", "template": template}
