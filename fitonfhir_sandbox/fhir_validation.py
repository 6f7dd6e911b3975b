"""Structural validation of written resources with the fhir.resources R4B models (DESIGN section 8).

The R4B models validate about a thousand Observations a second, far slower than anything else on the
write path, while an import writes thousands of Observations of the same few shapes. So a resource whose
*validation skeleton* has passed before is accepted without running the models again. The skeleton keeps
the structure exactly (resource type, keys, nesting, list lengths, JSON types) and replaces each primitive
by its validation class: for a string, which FHIR primitive patterns it matches (string, code, id, uri,
date, dateTime, instant, time, decimal, integer, base64, ...), whether it parses as an ISO date/time and
whether it fits an id's length; strings that look like URLs are kept as they are; for a number, its
ranges and its decimal form. Two resources with equal skeletons get the same answer from the models, so
every write is still validated; only failures are never cached (they are re-validated for their message).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class FhirProblem(Exception):
    """A request the sandbox refuses: HTTP status, FHIR issue code, diagnostics and the element at fault."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        code: str = "invalid",
        expression: list[str] | None = None,
        issues: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.issues = issues or [
            {"severity": "error", "code": code, "diagnostics": diagnostics, "expression": expression or []}
        ]

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)

    def with_prefix(self, prefix: str) -> FhirProblem:
        """The same problem reported for a Bundle entry (``Bundle.entry[3]: ...``)."""
        issues = [{**i, "diagnostics": f"{prefix}: {i['diagnostics']}"} for i in self.issues]
        return FhirProblem(self.status, f"{prefix}: {self.diagnostics}", self.code, issues=issues)


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    cleaned = [{k: v for k, v in issue.items() if v not in (None, [], "")} for issue in issues]
    return {"resourceType": "OperationOutcome", "issue": cleaned}


@lru_cache(maxsize=256)
def resource_model(resource_type: str) -> Any:
    """The R4B model class of a resource type, or None when it is not a FHIR R4 resource type."""
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, ImportError, AttributeError):
        return None
    return model if isinstance(model, type) and issubclass(model, Resource) else None


def check_type(resource_type: str) -> None:
    if resource_model(resource_type) is None:
        raise FhirProblem(404, f"Unknown resource type {resource_type!r}", code="not-supported")


def check_id(resource_id: str) -> None:
    if not ID_PATTERN.match(resource_id):
        raise FhirProblem(400, f"Invalid resource id {resource_id[:80]!r}: expected [A-Za-z0-9-.]{{1,64}}")


def _element_path(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _primitive_patterns() -> tuple[re.Pattern[str], ...]:
    import fhir_core.types as types

    found: dict[str, re.Pattern[str]] = {}
    for name in dir(types):
        cls = getattr(types, name)
        if not isinstance(cls, type):
            continue
        for attr in ("pattern", "regex"):
            value = getattr(cls, attr, None)
            if isinstance(value, str):
                value = re.compile(value)
            if isinstance(value, re.Pattern):
                found.setdefault(value.pattern, value)
    for extra in (  # patterns the library builds inside functions, and the uuid/id forms
        r"[ \r\n\t\S]+",
        r"^[^\s]+(\s[^\s]+)*$",
        r"^[A-Za-z0-9\-.]{1,64}$",
        r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    ):
        found.setdefault(extra, re.compile(extra))
    return tuple(found[k] for k in sorted(found))


def _fullmatch_only() -> frozenset[str]:
    """Patterns fhir_core applies with ``fullmatch`` only (their unanchored search never decides)."""
    import fhir_core.types as types

    return frozenset(getattr(types, name).pattern.pattern for name in ("Date", "DateTime", "Instant", "Time"))


_PATTERNS = _primitive_patterns()
_SEARCHED = tuple(p for p in _PATTERNS if p.pattern not in _fullmatch_only())

# Faster forms of a few patterns' answers, each equal by the rules of regular expressions (tested on a
# corpus against the patterns themselves): they are what a unique string (an id, an identifier value) costs.
# ``(\S|\s)*`` is every string, so both of its answers are always true. A top-level ``A|B`` matches where
# ``A`` or ``B`` does; ``^[0]`` is searched as a prefix, and a search for ``[-+]?[1-9][0-9]*$`` (the sign is
# optional, so it never decides) finds a match exactly when the digits that end the string (or end it
# before a final newline, where ``$`` also matches) hold one that is not 0: a scan from the end in C, where
# the engine tries every position of the string. The base64 pattern, on a string without whitespace,
# matches (both ways, being anchored) exactly when its length is a non-zero multiple of 4 and every character
# is of its alphabet; a string with whitespace is left to the pattern.
_EVERY_STRING = frozenset({r"\s*(\S|\s)*"})
_ZERO_OR_NUMBER = {
    r"^[0]|([1-9][0-9]*)$": re.compile(r"[0]|[1-9][0-9]*"),
    r"^[0]|[-+]?[1-9][0-9]*$": re.compile(r"[0]|[-+]?[1-9][0-9]*"),
}
_BASE64 = r"^(\s*([0-9a-zA-Z+=]){4}\s*)+$"
_BASE64_ALPHABET = re.compile(r"[0-9a-zA-Z+=]+")
_WHITESPACE = re.compile(r"\s")
_Answer = Callable[[str], object]
_ASCII_DIGITS = "0123456789"


def _ends_in_a_number(value: str) -> bool:
    """Whether ``[1-9][0-9]*$`` has a match in ``value``."""
    ends = (value, value[:-1]) if value.endswith("\n") else (value,)
    return any(head[len(head.rstrip(_ASCII_DIGITS)) :].strip("0") for head in ends)


def _answers(pattern: re.Pattern[str]) -> tuple[_Answer, _Answer]:
    """(fullmatch, search) of ``pattern`` as functions of the string; truthy when it matches."""
    if pattern.pattern in _EVERY_STRING:
        return (lambda _value: True), (lambda _value: True)
    if pattern.pattern in _ZERO_OR_NUMBER:
        return _ZERO_OR_NUMBER[pattern.pattern].fullmatch, (
            lambda value: value.startswith("0") or _ends_in_a_number(value)
        )
    if pattern.pattern == _BASE64:

        def base64(value: str) -> object:
            if _WHITESPACE.search(value):
                return pattern.search(value)  # the same as its fullmatch here
            return len(value) % 4 == 0 and _BASE64_ALPHABET.fullmatch(value)

        return base64, base64
    return pattern.fullmatch, pattern.search


_FULLMATCHES = tuple(_answers(p)[0] for p in _PATTERNS)
_SEARCHES = tuple(_answers(p)[1] for p in _SEARCHED)
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
_MAX_STRING_CLASSES = 50_000
_MAX_SKELETONS = 20_000
_string_classes: dict[str, Any] = {}
_valid_skeletons: set[Any] = set()
_cache_lock = threading.Lock()


def _parses(value: str) -> tuple[bool, bool, bool]:
    results = []
    for kind in (date, datetime, time):
        try:
            kind.fromisoformat(value.replace("Z", "+00:00"))
            results.append(True)
        except ValueError:
            results.append(False)
    return results[0], results[1], results[2]


def _string_class(value: str) -> Any:
    known = _string_classes.get(value)
    if known is not None:
        return known
    if "://" in value or len(value) > 4096:
        cls: Any = ("s=", value)  # URLs (validated as such by some types) and huge strings: as they are
    else:
        matches = 0
        for bit, fullmatch in enumerate(_FULLMATCHES):
            if fullmatch(value):
                matches |= 1 << bit
        for bit, search in enumerate(_SEARCHES, start=len(_PATTERNS)):
            if search(value):
                matches |= 1 << bit
        cls = (
            "s",
            matches,
            _parses(value) if value[:1].isdigit() else None,
            len(value) <= 64,
            value == value.strip(),
        )
    if len(_string_classes) >= _MAX_STRING_CLASSES:
        _string_classes.clear()
    _string_classes[value] = cls
    return cls


def _skeleton(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return ("d", tuple([(k, _skeleton(v)) for k, v in value.items()]))  # key order: a miss at worst
    if kind is list:
        return ("l", tuple(_skeleton(v) for v in value))
    if kind is str:
        return _string_class(value)
    if kind is bool or value is None:
        return (kind.__name__,)
    if kind is int:
        return ("i", value > 0, value >= 0, -(2**31) <= value < 2**31, -(2**63) < value < 2**63)
    if kind is float:
        text = str(value)
        return ("f", bool(_DECIMAL.fullmatch(text)), math.isfinite(value), value.is_integer(), "e" in text)
    return ("?", kind.__name__, repr(value))  # not JSON: never equal to a valid skeleton's part by accident


def validate_resource(body: Any, resource_type: str) -> None:
    """Raise FhirProblem(400) naming each failing element; ``resource_type`` is what the URL says."""
    if not isinstance(body, dict):
        raise FhirProblem(400, "Request body must be a JSON object (a FHIR resource)")
    actual = body.get("resourceType")
    if actual != resource_type:
        raise FhirProblem(
            400,
            f"resourceType {actual!r} does not match the request's resource type {resource_type!r}",
            expression=[f"{resource_type}.resourceType"],
        )
    check_type(resource_type)
    if "id" in body and (not isinstance(body["id"], str) or not ID_PATTERN.match(body["id"])):
        raise FhirProblem(
            400, f"Invalid {resource_type}.id {str(body['id'])[:80]!r}", expression=[f"{resource_type}.id"]
        )
    skeleton = (resource_type, _skeleton(body))
    if skeleton in _valid_skeletons:
        return
    try:
        resource_model(resource_type).model_validate(body)
    except ValidationError as exc:
        issues: list[dict[str, Any]] = []
        for error in exc.errors()[:20]:
            where = _element_path(resource_type, tuple(error.get("loc") or ()))
            issues.append(
                {
                    "severity": "error",
                    "code": "structure",
                    "diagnostics": f"{where}: {error.get('msg')}",
                    "expression": [where],
                }
            )
        raise FhirProblem(
            400, "; ".join(str(i["diagnostics"]) for i in issues), "structure", issues=issues
        ) from None
    with _cache_lock:
        if len(_valid_skeletons) >= _MAX_SKELETONS:
            _valid_skeletons.clear()
        _valid_skeletons.add(skeleton)
