"""Search support for the sandbox FHIR server: index extraction, FHIR date ranges and SQL building.

Indexed parameters (any resource type): ``identifier`` and ``code`` (tokens), ``subject``, ``patient``,
``device``, ``encounter`` (references), ``date`` (Observation.effective[x], Encounter.period), plus
``_id``. Unknown parameters are refused with 400 so a typo never silently widens a search.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fitonfhir_sandbox.fhir_validation import FhirProblem

FAR_PAST = -1e15
FAR_FUTURE = 1e15

TOKEN_PARAMS = ("identifier", "code")
REFERENCE_PARAMS = ("subject", "patient", "device", "encounter")
DATE_PARAMS = ("date",)
RESULT_PARAMS = ("_count", "_offset", "_sort", "_total", "_summary", "_format", "_pretty")
SORTABLE = {"_lastUpdated": "r.last_updated", "_id": "r.id", "date": "date_start"}
DEFAULT_COUNT = 50
MAX_COUNT = 1000

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def date_range(text: str) -> tuple[float, float]:
    """A FHIR date/dateTime/instant as the half-open epoch range [start, end) its precision covers."""
    match = _DATE.match(text.strip())
    if not match:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    g = match.groupdict()
    tz = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        tz = UTC if hours == minutes == 0 else _fixed(sign * (hours * 60 + minutes))
    year = int(g["y"])
    if g["m"] is None:
        start = datetime(year, 1, 1, tzinfo=tz)
        return start.timestamp(), datetime(year + 1, 1, 1, tzinfo=tz).timestamp()
    month = int(g["m"])
    if g["d"] is None:
        start = datetime(year, month, 1, tzinfo=tz)
        nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
        return start.timestamp(), nxt.timestamp()
    day = datetime(year, month, int(g["d"]), tzinfo=tz)
    if g["H"] is None:
        return day.timestamp(), (day + timedelta(days=1)).timestamp()
    start = day.replace(hour=int(g["H"]), minute=int(g["M"]))
    if g["S"] is None:
        return start.timestamp(), (start + timedelta(minutes=1)).timestamp()
    start = start.replace(second=int(g["S"]))
    if g["f"]:
        digits = len(g["f"]) - 1
        begin = start.timestamp() + float(g["f"])
        return begin, begin + 10.0**-digits
    return start.timestamp(), start.timestamp() + 1


def _fixed(minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


@dataclass
class IndexRows:
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)  # (param, system, value)
    dates: list[tuple[str, float, float]] = field(default_factory=list)  # (param, start, end)


def _reference_parts(reference: Any) -> tuple[str, str] | None:
    if not isinstance(reference, Mapping):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str) or "/" not in ref:
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2], parts[-1]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def index_rows(resource: Mapping[str, Any]) -> IndexRows:
    """What a resource contributes to the search index."""
    rows = IndexRows()
    for ident in _as_list(resource.get("identifier")):
        if isinstance(ident, Mapping) and ident.get("value"):
            rows.tokens.append(("identifier", ident.get("system"), str(ident["value"])))
    code = resource.get("code")
    if isinstance(code, Mapping):
        for coding in _as_list(code.get("coding")):
            if isinstance(coding, Mapping) and coding.get("code"):
                rows.tokens.append(("code", coding.get("system"), str(coding["code"])))
    for param in ("subject", "patient", "device", "encounter"):
        for ref in _as_list(resource.get(param)):
            parts = _reference_parts(ref)
            if parts:
                rows.tokens.append((param, parts[0], parts[1]))
                if param == "subject" and parts[0] == "Patient":
                    rows.tokens.append(("patient", parts[0], parts[1]))
    for key in ("effectiveDateTime", "effectiveInstant"):
        if isinstance(resource.get(key), str):
            _add_date(rows, resource[key], resource[key])
    for key in ("effectivePeriod", "period"):
        period = resource.get(key)
        if isinstance(period, Mapping) and (period.get("start") or period.get("end")):
            _add_date(rows, period.get("start"), period.get("end"))
    return rows


def _add_date(rows: IndexRows, start_text: str | None, end_text: str | None) -> None:
    try:
        start = date_range(start_text)[0] if start_text else FAR_PAST
        end = date_range(end_text)[1] if end_text else FAR_FUTURE
    except ValueError:
        return  # validation already refused malformed dates; nothing to index
    rows.dates.append(("date", start, end))


@dataclass
class SearchQuery:
    where: list[str]
    args: list[Any]
    order: str
    count: int
    offset: int
    total: bool
    summary_count: bool
    kept: list[tuple[str, str]]  # parameters to repeat in paging links


def _split_unescaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """Split at separators not preceded by a FHIR search escape (``\\``); pieces keep their escapes."""
    pieces, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator and limit != 0:
            pieces.append(current)
            current = ""
            limit -= 1
        else:
            current += char
    pieces.append(current + ("\\" if escaped else ""))
    return pieces


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_values(raw: str) -> list[str]:
    """Comma-separated alternatives (OR), escapes kept for a later ``|`` split."""
    return _split_unescaped(raw, ",")


def _token_clause(param: str, raw: str) -> tuple[str, list[Any]]:
    ors, args = [], []
    for value in _split_values(raw):
        parts = [_unescape(p) for p in _split_unescaped(value, "|", limit=1)]
        if len(parts) == 2:
            system, code = parts
            if system and code:
                ors.append("(t.system = ? AND t.value = ?)")
                args += [system, code]
            elif code:
                ors.append("(t.system IS NULL AND t.value = ?)")
                args.append(code)
            elif system:
                ors.append("(t.system = ?)")
                args.append(system)
            else:
                raise FhirProblem(400, f"Empty token in search parameter {param!r}")
        else:
            ors.append("(t.value = ?)")
            args.append(parts[0])
    clause = (
        "r.n IN (SELECT t.owner FROM tokens t WHERE t.param = ? AND ("  # noqa: S608
        + " OR ".join(ors)
        + "))"
    )
    return clause, [param, *args]


def _reference_clause(param: str, raw: str) -> tuple[str, list[Any]]:
    ors, args = [], []
    for value in map(_unescape, _split_values(raw)):
        parts = value.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            ors.append("(t.system = ? AND t.value = ?)")
            args += [parts[-2], parts[-1]]
        elif parts[0]:
            ors.append("(t.value = ?)")
            args.append(parts[0])
        else:
            raise FhirProblem(400, f"Empty reference in search parameter {param!r}")
    clause = (
        "r.n IN (SELECT t.owner FROM tokens t WHERE t.param = ? AND ("  # noqa: S608
        + " OR ".join(ors)
        + "))"
    )
    return clause, [param, *args]


_DATE_COMPARISONS = {
    "eq": ("d.start >= ? AND d.end_ <= ?", ("s", "e")),
    "ne": ("NOT (d.start >= ? AND d.end_ <= ?)", ("s", "e")),
    "ge": ("d.end_ > ?", ("s",)),
    "le": ("d.start < ?", ("e",)),
    "gt": ("d.end_ > ?", ("e",)),
    "lt": ("d.start < ?", ("s",)),
    "sa": ("d.start >= ?", ("e",)),
    "eb": ("d.end_ <= ?", ("s",)),
}


def _date_clause(param: str, raw: str) -> tuple[str, list[Any]]:
    prefix, text = ("eq", raw)
    if raw[:2] in _PREFIXES:
        prefix, text = raw[:2], raw[2:]
    if prefix == "ap":
        prefix = "eq"
    try:
        start, end = date_range(text)
    except ValueError:
        raise FhirProblem(
            400, f"Invalid date in search parameter {param}={raw!r}", expression=[param]
        ) from None
    sql, which = _DATE_COMPARISONS[prefix]
    values = {"s": start, "e": end}
    clause = f"r.n IN (SELECT d.owner FROM dates d WHERE d.param = ? AND {sql})"  # noqa: S608
    return clause, [param, *(values[w] for w in which)]


def _int_param(name: str, raw: str, maximum: int) -> int:
    if not raw.isdigit():
        raise FhirProblem(400, f"Search parameter {name} must be a non-negative integer, got {raw!r}")
    return min(int(raw), maximum)


def build_query(params: list[tuple[str, str]]) -> SearchQuery:
    """Translate search parameters into SQL over ``resources r`` (refusing what it does not support)."""
    where, args, kept = ["r.type = ?", "r.deleted = 0"], [], []
    count, offset, total, summary_count = DEFAULT_COUNT, 0, True, False
    order = "r.last_updated, r.id"
    indexed = False  # a token, reference or date clause: matches come from the index
    for name, raw in params:
        if name in ("_format", "_pretty"):
            continue
        if name == "_count":
            count = _int_param(name, raw, MAX_COUNT)
        elif name == "_offset":
            offset = _int_param(name, raw, 10**9)
            continue
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise FhirProblem(400, f"_total must be none, estimate or accurate, got {raw!r}")
            total = raw != "none"
        elif name == "_summary":
            if raw != "count":
                raise FhirProblem(400, f"Only _summary=count is supported, got {raw!r}")
            summary_count = True
        elif name == "_sort":
            order = _order_by(raw)
        elif name == "_id":
            ids = [_unescape(v) for v in _split_values(raw)]
            where.append(f"r.id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        elif ":" in name:
            raise FhirProblem(400, f"Search modifiers are not supported: {name!r}", code="not-supported")
        elif name in TOKEN_PARAMS:
            clause, extra = _token_clause(name, raw)
            where.append(clause)
            args.extend(extra)
            indexed = True
        elif name in REFERENCE_PARAMS:
            clause, extra = _reference_clause(name, raw)
            where.append(clause)
            args.extend(extra)
            indexed = True
        elif name in DATE_PARAMS:
            clause, extra = _date_clause(name, raw)
            where.append(clause)
            args.extend(extra)
            indexed = True
        else:
            raise FhirProblem(
                400,
                f"Unknown or unsupported search parameter {name!r}",
                code="not-supported",
                expression=[name],
            )
        kept.append((name, raw))
    if indexed:
        # Found through the index's subqueries: read the matches by row number. Without the ``+``, SQLite
        # would walk every resource of the type to test each against the subqueries' list.
        where[0] = "+r.type = ?"
    return SearchQuery(where, args, order, count, offset, total, summary_count, kept)


def _order_by(raw: str) -> str:
    terms = []
    for key in raw.split(","):
        descending = key.startswith("-")
        column = SORTABLE.get(key.lstrip("-"))
        if column is None:
            raise FhirProblem(400, f"Cannot sort by {key!r}; supported: {', '.join(SORTABLE)}")
        terms.append(f"{column} {'DESC' if descending else 'ASC'}")
    return ", ".join([*terms, "r.id"])
