"""Structural validation of written resources with the fhir.resources R4B models (DESIGN section 8)."""

from __future__ import annotations

import re
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
