"""FHIR destination mapping (``CollectionFhir`` of ``CodeValueFhir``) loading with MedTech's rules.

``typeName`` is unique case-insensitively and looked up case-insensitively; ``valueName`` stays
case-sensitive. Unlike MedTech, an unsupported ``periodInterval`` or a SampledData value without
``defaultPeriod`` is rejected at load instead of failing every group later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fitonfhir_dagster.medtech.device_templates import (
    LineDict,
    normalise_kind,
    parse_mapping_source,
)
from fitonfhir_dagster.medtech.medtech_errors import InvalidTemplateException

SAMPLED_DATA = "SampledData"
QUANTITY = "Quantity"
STRING = "String"
CODEABLE_CONCEPT = "CodeableConcept"
VALUE_TYPES = {v.lower(): v for v in (SAMPLED_DATA, QUANTITY, STRING, CODEABLE_CONCEPT)}

INSTANCE, HOURLY, DAILY, CORRELATION = 0, 60, 1440, -1
PERIOD_NAMES = {"single": INSTANCE, "hourly": HOURLY, "daily": DAILY, "correlationid": CORRELATION}


@dataclass(frozen=True)
class FhirCode:
    code: str | None
    system: str | None = None
    display: str | None = None

    def coding(self) -> dict[str, str]:
        """A FHIR Coding with null members left out (MedTech omits them)."""
        out = {}
        if self.system is not None:
            out["system"] = self.system
        if self.code is not None:
            out["code"] = self.code
        if self.display is not None:
            out["display"] = self.display
        return out


@dataclass(frozen=True)
class FhirValue:
    value_type: str
    value_name: str
    unit: str | None = None
    system: str | None = None
    code: str | None = None
    default_period: float | None = None
    text: str | None = None
    codes: tuple[FhirCode, ...] = ()


@dataclass(frozen=True)
class FhirComponent:
    codes: tuple[FhirCode, ...]
    value: FhirValue


@dataclass(frozen=True)
class FhirCategory:
    text: str | None
    codes: tuple[FhirCode, ...]


@dataclass(frozen=True)
class CodeValueTemplate:
    index: int
    line: int | None
    type_name: str
    period_interval: int
    codes: tuple[FhirCode, ...]
    category: tuple[FhirCategory, ...] = ()
    value: FhirValue | None = None
    components: tuple[FhirComponent, ...] = ()

    uses_sampled_data: bool = field(init=False)

    def __post_init__(self) -> None:
        values = [self.value] if self.value else []
        values += [c.value for c in self.components]
        object.__setattr__(self, "uses_sampled_data", any(v.value_type == SAMPLED_DATA for v in values))


@dataclass
class FhirMapping:
    templates: list[CodeValueTemplate]

    def __post_init__(self) -> None:
        self._by_type = {t.type_name.lower(): t for t in self.templates}

    def find(self, type_name: str) -> CodeValueTemplate | None:
        return self._by_type.get(type_name.lower())


class _Reader:
    def __init__(self, source: str, where: str, line: int | None):
        self.source, self.where, self.line = source, where, line

    def fail(self, problem: str, node: Any = None) -> InvalidTemplateException:
        line = node.line if isinstance(node, LineDict) and node.line else self.line
        at = f" (line {line})" if line else ""
        return InvalidTemplateException(f"{self.source}: {self.where}{at}: {problem}", line)

    def keyed(self, node: Any, allowed: set[str], what: str) -> dict[str, Any]:
        if not isinstance(node, Mapping):
            raise self.fail(f"{what} must be an object")
        out: dict[str, Any] = {}
        for key, value in node.items():
            lower = str(key).lower()
            if lower not in allowed:
                raise self.fail(f"{what}: unknown property {key!r}", node)
            out[lower] = value
        return out

    def text(self, value: Any, what: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise self.fail(f"{what} must be a string")

    def codes(self, raw: Any, what: str, required: bool) -> tuple[FhirCode, ...]:
        if raw is None and not required:
            return ()
        if not isinstance(raw, list):
            raise self.fail(f"{what} must be an array of codes")
        out = []
        for i, item in enumerate(raw):
            spec = self.keyed(item, {"code", "system", "display"}, f"{what}[{i}]")
            out.append(
                FhirCode(
                    self.text(spec.get("code"), f"{what}[{i}].code"),
                    self.text(spec.get("system"), f"{what}[{i}].system"),
                    self.text(spec.get("display"), f"{what}[{i}].display"),
                )
            )
        return tuple(out)

    def value(self, raw: Any, what: str) -> FhirValue:
        spec = self.keyed(
            raw, {"valuetype", "valuename", "unit", "system", "code", "defaultperiod", "text", "codes"}, what
        )
        value_type = VALUE_TYPES.get(str(spec.get("valuetype", "")).lower())
        if value_type is None:
            raise self.fail(f"{what}.valueType must be one of {', '.join(VALUE_TYPES.values())}", raw)
        name = spec.get("valuename")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(f"{what}.valueName is required", raw)
        period = spec.get("defaultperiod")
        if value_type == SAMPLED_DATA:
            if isinstance(period, str):
                try:
                    period = float(period)
                except ValueError:
                    period = None
            if isinstance(period, bool) or not isinstance(period, int | float) or period <= 0:
                raise self.fail(f"{what}.defaultPeriod must be a positive number of milliseconds", raw)
        return FhirValue(
            value_type=value_type,
            value_name=name,
            unit=self.text(spec.get("unit"), f"{what}.unit"),
            system=self.text(spec.get("system"), f"{what}.system"),
            code=self.text(spec.get("code"), f"{what}.code"),
            default_period=float(period) if value_type == SAMPLED_DATA and period is not None else None,
            text=self.text(spec.get("text"), f"{what}.text"),
            codes=self.codes(spec.get("codes"), f"{what}.codes", False),
        )


def _period(reader: _Reader, raw: Any) -> int:
    if raw is None:
        return INSTANCE
    if isinstance(raw, str):
        if raw.lower() in PERIOD_NAMES:
            return PERIOD_NAMES[raw.lower()]
        try:
            raw = int(raw)
        except ValueError:
            raw = None
    if isinstance(raw, bool) or raw not in (INSTANCE, HOURLY, DAILY, CORRELATION):
        raise reader.fail("periodInterval must be 0, 60, 1440 or -1 (Single, Hourly, Daily, CorrelationId)")
    return int(raw)


def load_fhir_mapping(source: Any, source_name: str = "FHIR mapping") -> FhirMapping:
    """Validate a ``CollectionFhir`` mapping (parsed dict or JSON text); errors name template and line."""
    source = parse_mapping_source(source, source_name)
    root_reader = _Reader(source_name, "root", source.line if isinstance(source, LineDict) else None)
    root = root_reader.keyed(source, {"templatetype", "template"}, "mapping")
    if normalise_kind(root.get("templatetype", "")) != "collectionfhir":
        raise root_reader.fail("templateType must be 'CollectionFhir'")
    entries = root.get("template")
    if not isinstance(entries, list):
        raise root_reader.fail("'template' must be an array of templates")
    templates: list[CodeValueTemplate] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        line = entry.line if isinstance(entry, LineDict) else None
        reader = _Reader(source_name, f"template {index}", line)
        outer = reader.keyed(entry, {"templatetype", "template"}, "entry")
        if normalise_kind(outer.get("templatetype", "")) != "codevaluefhir":
            raise reader.fail(f"unknown templateType {outer.get('templatetype')!r} (only CodeValueFhir)")
        body = reader.keyed(
            outer.get("template"),
            {"typename", "periodinterval", "category", "codes", "value", "components"},
            "template",
        )
        type_name = body.get("typename")
        if not isinstance(type_name, str) or not type_name.strip():
            raise reader.fail("typeName is required")
        reader.where = f"template {index} (CodeValueFhir {type_name!r})"
        if type_name.lower() in seen:
            raise reader.fail(f"typeName duplicates template {seen[type_name.lower()]} (case-insensitive)")
        seen[type_name.lower()] = index
        if "codes" not in body:
            raise reader.fail("codes is required (it may be an empty array)")
        categories = []
        for i, raw in enumerate(body.get("category") or []):
            spec = reader.keyed(raw, {"text", "codes"}, f"category[{i}]")
            categories.append(
                FhirCategory(
                    reader.text(spec.get("text"), f"category[{i}].text"),
                    reader.codes(spec.get("codes"), f"category[{i}].codes", False),
                )
            )
        components = []
        raw_components = body.get("components") or []
        if not isinstance(raw_components, list):
            raise reader.fail("components must be an array")
        for i, raw in enumerate(raw_components):
            spec = reader.keyed(raw, {"codes", "value"}, f"components[{i}]")
            if spec.get("value") is None:
                raise reader.fail(f"components[{i}].value is required")
            components.append(
                FhirComponent(
                    reader.codes(spec.get("codes"), f"components[{i}].codes", False),
                    reader.value(spec["value"], f"components[{i}].value"),
                )
            )
        templates.append(
            CodeValueTemplate(
                index=index,
                line=line,
                type_name=type_name,
                period_interval=_period(reader, body.get("periodinterval")),
                codes=reader.codes(body.get("codes"), "codes", True),
                category=tuple(categories),
                value=reader.value(body["value"], "value") if body.get("value") is not None else None,
                components=tuple(components),
            )
        )
    return FhirMapping(templates)
