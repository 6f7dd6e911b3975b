"""Reading Google Fit ``dataSources`` into checked records the template generators can trust.

Input is what ``GET users/me/dataSources`` returns (``{"dataSource": [...]}``) or a bare array of
data sources, as the original generator accepted. Every problem is reported with the position of
the offending source (``dataSource[3]``) so a hand-edited file can be fixed quickly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitonfhir_dagster.googlefit.catalog import Field

FIELD_FORMATS: tuple[str, ...] = ("floatPoint", "integer", "string", "map")


class TemplateGenerationError(ValueError):
    """Input that cannot be turned into MedTech templates; the message says what and where."""


@dataclass(frozen=True)
class DataSource:
    """One Google Fit data source, reduced to what the templates are built from."""

    index: int
    stream_id: str
    type: str
    data_type_name: str
    fields: tuple[Field, ...]
    package_name: str
    manufacturer: str
    model: str
    uid: str
    stream_name: str

    @property
    def label(self) -> str:
        return f"dataSource[{self.index}] ({self.stream_id!r})"

    @property
    def type_name_components(self) -> tuple[str, ...]:
        """The original's typeName parts in order; blanks dropped, the device uid left out."""
        parts = (self.type, self.data_type_name, self.package_name, self.manufacturer, self.model)
        return tuple(p for p in (*parts, self.stream_name) if p.strip())

    @property
    def type_name(self) -> str:
        return ":".join(self.type_name_components)

    @property
    def has_device(self) -> bool:
        return bool(self.manufacturer.strip() or self.model.strip() or self.uid.strip())


def read_data_sources_file(path: Path) -> Any:
    """Parse a data sources file; unreadable files and invalid JSON name the file."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TemplateGenerationError(f"cannot read data sources file {str(path)!r}: {reason}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateGenerationError(
            f"data sources file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


def parse_data_sources(document: Any) -> list[DataSource]:
    """Check a list response or bare array and return its sources in input order."""
    if isinstance(document, dict):
        if "dataSource" not in document:
            raise TemplateGenerationError(
                "expected a Google dataSources list response with a 'dataSource' array, or a bare array; "
                "the JSON object has no 'dataSource' property"
            )
        entries = document["dataSource"]
        if not isinstance(entries, list):
            raise TemplateGenerationError("'dataSource' must be an array of data sources")
    elif isinstance(document, list):
        entries = document
    else:
        raise TemplateGenerationError(
            "expected a Google dataSources list response (JSON object) or a JSON array of data sources"
        )
    if not entries:
        raise TemplateGenerationError("the input contains no data sources")
    return [_parse_one(index, entry) for index, entry in enumerate(entries)]


def select_sources(sources: Iterable[DataSource], include: Sequence[str]) -> list[DataSource]:
    """Keep sources whose dataStreamId matches any include regex (case-insensitive search); all if none."""
    patterns = []
    for pattern in include:
        try:
            patterns.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise TemplateGenerationError(f"invalid include regex {pattern!r}: {exc}") from exc
    if not patterns:
        return list(sources)
    return [s for s in sources if any(p.search(s.stream_id) for p in patterns)]


def _parse_one(index: int, entry: Any) -> DataSource:
    where = f"dataSource[{index}]"
    if not isinstance(entry, dict):
        raise TemplateGenerationError(f"{where} is not a JSON object")
    stream_id = entry.get("dataStreamId")
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise TemplateGenerationError(
            f"{where} is missing required field 'dataStreamId' (a non-empty string)"
        )
    where = f"{where} ({stream_id!r})"
    data_type = entry.get("dataType")
    if not isinstance(data_type, dict):
        raise TemplateGenerationError(f"{where} is missing required field 'dataType' (an object)")
    raw_fields = data_type.get("field")
    if not isinstance(raw_fields, list):
        raise TemplateGenerationError(f"{where} is missing required field 'dataType.field' (an array)")
    device = _optional_object(entry, "device", where)
    application = _optional_object(entry, "application", where)
    source = DataSource(
        index=index,
        stream_id=stream_id,
        type=_optional_string(entry, "type", where),
        data_type_name=_optional_string(data_type, "name", where, "dataType.name"),
        fields=tuple(_parse_field(f, i, where) for i, f in enumerate(raw_fields)),
        package_name=_optional_string(application, "packageName", where, "application.packageName"),
        manufacturer=_optional_string(device, "manufacturer", where, "device.manufacturer"),
        model=_optional_string(device, "model", where, "device.model"),
        uid=_optional_string(device, "uid", where, "device.uid"),
        stream_name=_optional_string(entry, "dataStreamName", where),
    )
    if not source.type_name_components:
        raise TemplateGenerationError(
            f"{where} has no type-name components: type, dataType.name, application.packageName, "
            "device.manufacturer, device.model and dataStreamName are all blank"
        )
    if not source.data_type_name.strip():
        raise TemplateGenerationError(
            f"{where} has a blank 'dataType.name'; points cannot be matched without it"
        )
    return source


def _parse_field(raw: Any, position: int, where: str) -> Field:
    at = f"{where} dataType.field[{position}]"
    if not isinstance(raw, dict):
        raise TemplateGenerationError(f"{at} is not a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TemplateGenerationError(f"{at} is missing required field 'name' (a non-empty string)")
    fmt = raw.get("format")
    if not isinstance(fmt, str):
        raise TemplateGenerationError(f"{at} ({name!r}) is missing required field 'format' (a string)")
    if fmt not in FIELD_FORMATS:
        raise TemplateGenerationError(
            f"{at} ({name!r}) has unknown format {fmt!r}; expected one of {', '.join(FIELD_FORMATS)}"
        )
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise TemplateGenerationError(f"{at} ({name!r}) has a non-boolean 'optional': {optional!r}")
    return Field(name, fmt, optional)


def _optional_object(entry: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = entry.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateGenerationError(f"{where} field {key!r} must be an object")
    return value


def _optional_string(obj: dict[str, Any], key: str, where: str, label: str | None = None) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TemplateGenerationError(f"{where} field {label or key!r} must be a string, got {value!r}")
    return value
