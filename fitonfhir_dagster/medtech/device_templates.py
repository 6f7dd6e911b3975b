"""Device mapping (``CollectionContent``) loading with MedTech's validation rules.

Rules kept from MedTech: template kinds and property names are case-insensitive, a kind may end in
``Template``, unknown properties are errors, booleans may be strings, validation is all-or-nothing.
One improvement: every expression (JSONPath too) is compiled at load, so a syntax error names its
template and line instead of failing message by message.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fitonfhir_dagster.medtech.jmespath_functions import (
    JmesPathExpression,
    JmesPathFunctionError,
    JmesPathSyntaxError,
)
from fitonfhir_dagster.medtech.jsonpath import (
    MISSING,
    JsonPath,
    JsonPathMultipleTokensError,
    JsonPathSyntaxError,
    compile_jsonpath,
)
from fitonfhir_dagster.medtech.medtech_errors import InvalidTemplateException

CALCULATED = "CalculatedContent"
JSONPATH = "JsonPathContent"
IOT = "IotJsonPathContent"
IOT_CENTRAL = "IotCentralJsonPathContent"
KINDS = {k.lower(): k for k in (CALCULATED, JSONPATH, IOT, IOT_CENTRAL)}

_COMMON = {"typename", "typematchexpression", "patientidexpression", "encounteridexpression"}
_COMMON |= {"correlationidexpression", "values"}
_ALLOWED = {
    CALCULATED: _COMMON | {"deviceidexpression", "timestampexpression", "defaultexpressionlanguage"},
    JSONPATH: _COMMON | {"deviceidexpression", "timestampexpression"},
    IOT: set(_COMMON),
    IOT_CENTRAL: set(_COMMON),
}
_FIXED = {
    IOT: ("$.SystemProperties.iothub-connection-device-id", "$.Properties.iothub-creation-time-utc"),
    IOT_CENTRAL: ("$.deviceId", "$.enqueuedTime"),
}
_IOT_ENQUEUED = "$.SystemProperties.iothub-enqueuedtime"
LANGUAGES = {"jsonpath": "JsonPath", "jmespath": "JmesPath"}
TOKEN = "matchedToken"


class ExpressionError(Exception):
    """An expression failed on a message (several tokens for one value, or a function error)."""


# ----------------------------------------------------------------------------- JSON with line numbers


class LineDict(dict[str, Any]):
    """A JSON object that remembers the line it started on."""

    line: int | None = None


def load_json_with_lines(text: str) -> Any:
    """Parse JSON keeping each object's starting line (``LineDict.line``) for error messages."""
    line_starts = [0]
    index = text.find("\n")
    while index >= 0:
        line_starts.append(index + 1)
        index = text.find("\n", index + 1)

    decoder = json.JSONDecoder()
    plain_parse_object = decoder.parse_object  # type: ignore[attr-defined]

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[LineDict, int]:
        obj, end = plain_parse_object(s_and_end, *args)
        positioned = LineDict(obj)
        positioned.line = bisect.bisect_right(line_starts, s_and_end[1] - 1)
        return positioned, end

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder.decode(text)


def line_of(node: Any) -> int | None:
    return node.line if isinstance(node, LineDict) else None


# ----------------------------------------------------------------------------- expressions


class Expression:
    """One template expression in its language, compiled once."""

    def __init__(self, text: str, language: str):
        self.text = text
        self.language = language
        self._jsonpath: JsonPath | None = None
        self._jmespath: JmesPathExpression | None = None
        # A plain JSONPath chain not starting at ``matchedToken``: the same for every match of a message.
        self.reads_message_only = False
        if language == "JmesPath":
            self._jmespath = JmesPathExpression(text)
        else:
            self._jsonpath = compile_jsonpath(text)
            fields = self._jsonpath.simple_fields
            self.reads_message_only = bool(fields) and fields is not None and fields[0] != TOKEN

    def select(self, data: Any, cache: dict[Any, Any] | None = None) -> list[Any]:
        """Every match (a type match: each token is one measurement); ``cache``: one dict per message."""
        if self._jsonpath is not None:
            return self._jsonpath.select(data, cache)
        assert self._jmespath is not None
        try:
            result = self._jmespath.evaluate(data)
        except JmesPathFunctionError as exc:
            raise ExpressionError(str(exc)) from None
        if result is None:
            return []
        if self._jmespath.is_projection and type(result) is list:
            return [item for item in result if item is not None]
        return [result]

    def select_one(self, data: Any) -> Any:
        """The single value, ``None`` for JSON null, ``MISSING`` when nothing is found."""
        if self._jsonpath is not None:
            try:
                return self._jsonpath.select_one(data)
            except JsonPathMultipleTokensError as exc:
                raise ExpressionError(str(exc)) from None
        assert self._jmespath is not None
        try:
            result = self._jmespath.evaluate(data)
        except JmesPathFunctionError as exc:
            raise ExpressionError(f"{self.text}: {exc}") from None
        if self._jmespath.is_projection and type(result) is list:
            if len(result) > 1:
                raise ExpressionError(f"Multiple tokens were returned by {self.text}")
            return result[0] if result else MISSING
        return MISSING if result is None else result

    def __repr__(self) -> str:
        return f"Expression({self.language}: {self.text!r})"


# ----------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class ValueTemplate:
    name: str
    expression: Expression
    required: bool


@dataclass
class ContentTemplate:
    """One device template: how to find matches and read a measurement from each."""

    index: int
    line: int | None
    kind: str
    type_name: str
    type_match: Expression
    device_id: Expression
    timestamp: Expression
    timestamp_fallback: Expression | None = None
    patient_id: Expression | None = None
    encounter_id: Expression | None = None
    correlation_id: Expression | None = None
    values: list[ValueTemplate] = field(default_factory=list)

    @property
    def matched_token_scope(self) -> bool:
        """CalculatedContent reads the wrapped message plus ``matchedToken``; legacy kinds the match."""
        return self.kind == CALCULATED

    @property
    def where(self) -> str:
        line = f", line {self.line}" if self.line else ""
        return f"template {self.index} ({self.kind} {self.type_name!r}{line})"


@dataclass
class DeviceMapping:
    templates: list[ContentTemplate]


class _Loader:
    def __init__(self, source_name: str):
        self.source = source_name

    def fail(self, where: str, problem: str, line: int | None) -> InvalidTemplateException:
        at = f" (line {line})" if line else ""
        return InvalidTemplateException(f"{self.source}: {where}{at}: {problem}", line)

    def keyed(self, node: Any, allowed: set[str], where: str) -> dict[str, Any]:
        """Properties by lower-case name; unknown or repeated names are errors (strict like MedTech)."""
        if not isinstance(node, Mapping):
            raise self.fail(where, f"expected an object, got {type(node).__name__}", None)
        out: dict[str, Any] = {}
        for key, value in node.items():
            lower = str(key).lower()
            if lower not in allowed:
                raise self.fail(where, f"unknown property {key!r}", line_of(node))
            if lower in out:
                raise self.fail(where, f"property {key!r} given twice", line_of(node))
            out[lower] = value
        return out


def normalise_kind(value: Any) -> str:
    """``calculatedcontenttemplate`` -> ``calculatedcontent``: MedTech's case-insensitive kind names."""
    text = str(value).lower()
    return text[: -len("template")] if text.endswith("template") else text


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def parse_mapping_source(source: Any, source_name: str) -> Any:
    """A mapping given as bytes or JSON text parsed with line numbers kept; dicts pass through."""
    if isinstance(source, bytes | bytearray):
        source = source.decode("utf-8")
    if isinstance(source, str):
        try:
            return load_json_with_lines(source)
        except json.JSONDecodeError as exc:
            raise InvalidTemplateException(
                f"{source_name}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                exc.lineno,
            ) from None
    return source


def load_device_mapping(source: Any, source_name: str = "device mapping") -> DeviceMapping:
    """Validate and compile a ``CollectionContent`` mapping (a parsed dict or JSON text).

    Raises ``InvalidTemplateException`` naming the template index, type name and line.
    """
    source = parse_mapping_source(source, source_name)
    loader = _Loader(source_name)
    root = loader.keyed(source, {"templatetype", "template"}, "root")
    if normalise_kind(root.get("templatetype", "")) != "collectioncontent":
        raise loader.fail("root", "templateType must be 'CollectionContent'", line_of(source))
    entries = root.get("template")
    if not isinstance(entries, list):
        raise loader.fail("root", "'template' must be an array of templates", line_of(source))
    return DeviceMapping([_load_template(loader, i, entry) for i, entry in enumerate(entries)])


def _load_template(loader: _Loader, index: int, entry: Any) -> ContentTemplate:
    where = f"template {index}"
    outer = loader.keyed(entry, {"templatetype", "template"}, where)
    line = line_of(entry)
    kind = KINDS.get(normalise_kind(outer.get("templatetype", "")))
    if kind is None:
        raise loader.fail(where, f"unknown templateType {outer.get('templatetype')!r}", line)
    body = loader.keyed(outer.get("template"), _ALLOWED[kind], f"{where} ({kind})")
    line = line_of(outer.get("template")) or line
    type_name = body.get("typename")
    if not isinstance(type_name, str) or not type_name.strip():
        raise loader.fail(f"{where} ({kind})", "typeName is required", line)
    where = f"template {index} ({kind} {type_name!r})"

    default_language = "JsonPath"
    if "defaultexpressionlanguage" in body:
        default_language = LANGUAGES.get(str(body["defaultexpressionlanguage"]).lower(), "")
        if not default_language:
            raise loader.fail(
                where, f"unknown defaultExpressionLanguage {body['defaultexpressionlanguage']!r}", line
            )

    def expression(raw: Any, name: str, required: bool) -> Expression | None:
        if raw is None:
            if required:
                raise loader.fail(where, f"{name} is required", line)
            return None
        text, language = raw, default_language
        if isinstance(raw, Mapping):
            if kind != CALCULATED:
                raise loader.fail(
                    where, f"{name}: {kind} takes plain JSONPath strings only", line_of(raw) or line
                )
            spec = loader.keyed(raw, {"value", "language"}, f"{where} {name}")
            text = spec.get("value")
            language = LANGUAGES.get(str(spec.get("language", default_language)).lower(), "")
            if not language:
                raise loader.fail(
                    where, f"{name}: unknown language {spec.get('language')!r}", line_of(raw) or line
                )
        if not isinstance(text, str) or not text.strip():
            raise loader.fail(where, f"{name} must be a non-empty expression", line)
        try:
            return Expression(text, language)
        except (JsonPathSyntaxError, JmesPathSyntaxError) as exc:
            raise loader.fail(where, f"{name}: {exc}", line_of(raw) or line) from None

    type_match = expression(body.get("typematchexpression"), "typeMatchExpression", True)
    if kind in _FIXED:
        device_text, time_text = _FIXED[kind]
        device_id: Expression | None = Expression(device_text, "JsonPath")
        timestamp: Expression | None = Expression(time_text, "JsonPath")
        fallback = Expression(_IOT_ENQUEUED, "JsonPath") if kind == IOT else None
    else:
        device_id = expression(body.get("deviceidexpression"), "deviceIdExpression", True)
        timestamp = expression(body.get("timestampexpression"), "timestampExpression", True)
        fallback = None
    raw_values = body.get("values")
    if raw_values is None:
        if kind == CALCULATED:
            raise loader.fail(where, "values is required (it may be an empty array)", line)
        raw_values = []
    if not isinstance(raw_values, list):
        raise loader.fail(where, "values must be an array", line)
    values = []
    for number, raw in enumerate(raw_values):
        value_where = f"{where} values[{number}]"
        spec = loader.keyed(raw, {"valuename", "valueexpression", "required"}, value_where)
        name = spec.get("valuename")
        if not isinstance(name, str) or not name.strip():
            raise loader.fail(value_where, "valueName is required", line_of(raw) or line)
        required = parse_bool(spec.get("required", False))
        if required is None:
            raise loader.fail(
                value_where, f"required must be true or false, got {spec['required']!r}", line_of(raw)
            )
        value_expression = expression(spec.get("valueexpression"), f"values[{number}].valueExpression", True)
        assert value_expression is not None
        values.append(ValueTemplate(name, value_expression, required))
    assert type_match is not None and device_id is not None and timestamp is not None
    return ContentTemplate(
        index=index,
        line=line,
        kind=kind,
        type_name=type_name,
        type_match=type_match,
        device_id=device_id,
        timestamp=timestamp,
        timestamp_fallback=fallback,
        patient_id=expression(body.get("patientidexpression"), "patientIdExpression", False),
        encounter_id=expression(body.get("encounteridexpression"), "encounterIdExpression", False),
        correlation_id=expression(body.get("correlationidexpression"), "correlationIdExpression", False),
        values=values,
    )
