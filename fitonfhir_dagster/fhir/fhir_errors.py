"""Exceptions raised by the FHIR client.

Messages carry the HTTP status, the request method and path (never the query string, which may hold
identifiers, and never any header) and the server's OperationOutcome diagnostics, so a failed step says
what went wrong without leaking credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fitonfhir_dagster.http.retry_schedule import is_retryable_status


def outcome_diagnostics(outcome: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The human-readable lines of an OperationOutcome (diagnostics, else details.text, else code)."""
    if not isinstance(outcome, Mapping) or outcome.get("resourceType") != "OperationOutcome":
        return ()
    lines = []
    for issue in outcome.get("issue") or ():
        if not isinstance(issue, Mapping):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code") or ""
        where = issue.get("expression") or issue.get("location") or ()
        if where and isinstance(where, Sequence) and not isinstance(where, str):
            text = f"{text} (at {', '.join(str(w) for w in where)})"
        if text:
            lines.append(str(text))
    return tuple(lines)


class FhirError(Exception):
    """A FHIR interaction failed; ``status`` is the HTTP status (None when no response arrived)."""

    def __init__(
        self,
        status: int | None,
        method: str,
        path: str,
        diagnostics: Sequence[str] = (),
        outcome: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.diagnostics = tuple(diagnostics)
        self.outcome = dict(outcome) if outcome else None
        self.detail = detail
        status_text = f"HTTP {status}" if status is not None else "no response"
        text = "; ".join(self.diagnostics) or detail or "no diagnostics"
        super().__init__(f"FHIR {method} {path} failed ({status_text}): {text}")

    @property
    def retryable(self) -> bool:
        return self.status is None or is_retryable_status(self.status)


class PreconditionFailed(FhirError):
    """HTTP 412: the If-Match version is stale (or a conditional match was ambiguous); re-read and merge."""


class ResourceConflict(FhirError):
    """HTTP 409: a concurrent write or a conflicting resource; re-read and retry at a higher level."""


class InvalidResource(FhirError):
    """HTTP 400/422 on a write: the server rejected the resource's content (dead-letter, do not retry)."""


class FhirAuthError(FhirError):
    """HTTP 401/403: the credential is missing, expired or lacks permission."""


class FhirTransportError(FhirError):
    """No usable HTTP response (timeout, connection refused) after the bounded retries."""


def error_for(
    status: int | None,
    method: str,
    path: str,
    outcome: Mapping[str, Any] | None = None,
    detail: str = "",
) -> FhirError:
    """The most specific exception class for a failed response."""
    diagnostics = outcome_diagnostics(outcome)
    cls: type[FhirError]
    if status is None:
        cls = FhirTransportError
    elif status == 412:
        cls = PreconditionFailed
    elif status == 409:
        cls = ResourceConflict
    elif status in (401, 403):
        cls = FhirAuthError
    elif status in (400, 422) and method in ("POST", "PUT", "PATCH"):
        cls = InvalidResource
    else:
        cls = FhirError
    return cls(status, method, path, diagnostics, outcome, detail)
