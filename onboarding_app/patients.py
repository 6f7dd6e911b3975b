"""Ensure the onboarded person has a FHIR Patient carrying both identifiers.

Order as the original: search by the caller's (external) identifier, then by the Google identifier
``{iss, sub}``; create one Patient with both when neither exists; add a missing identifier with
If-Match (re-read and retry on 412). Patient ids are opaque strings (the original parsed them as GUIDs).
Identifier values are data: search values are escaped per FHIR search rules and every hit is checked
for an exact identifier match before it is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from fitonfhir_dagster.fhir.fhir_errors import PreconditionFailed

log = logging.getLogger(__name__)

MAX_IF_MATCH_ATTEMPTS = 5


class PatientError(Exception):
    """The Patient cannot be determined (e.g. two Patients share the identifier)."""


@dataclass(frozen=True)
class Identifier:
    system: str
    value: str

    def as_fhir(self) -> dict[str, str]:
        return {"system": self.system, "value": self.value}


class PatientServer(Protocol):
    """The part of ``fitonfhir_dagster.fhir.fhir_client.FhirClient`` used here."""

    def search(self, resource_type: str, params: dict[str, str]) -> Any: ...

    def read(self, resource_type: str, resource_id: str) -> Any: ...

    def create(self, resource: dict[str, Any]) -> Any: ...

    def update(self, resource: dict[str, Any], if_match: str | None = None) -> Any:
        """PUT; ``if_match`` is the expected versionId (the client builds the weak ETag)."""


def escape_search_value(value: str) -> str:
    """Escape ``\\`` and ``,`` (the OR separator) as FHIR search requires and every server reads back.

    ``|`` is left alone: servers split a token at its first ``|``, so a ``|`` inside the value is kept
    (system values cannot hold one: they are refused as URIs), and ``\\|``/``\\$`` are not read back
    by every server (Medplum's ``escapeSearchValue`` escapes only ``\\`` and ``,``).
    """
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _resources(result: Any) -> list[dict[str, Any]]:
    """Search results as resources, whether the client returns a Bundle or a list."""
    if isinstance(result, dict) and result.get("resourceType") == "Bundle":
        return [e["resource"] for e in result.get("entry") or () if isinstance(e, dict) and "resource" in e]
    return list(result or ())


def has_identifier(patient: dict[str, Any], identifier: Identifier) -> bool:
    return any(
        i.get("system") == identifier.system and i.get("value") == identifier.value
        for i in patient.get("identifier") or ()
        if isinstance(i, dict)
    )


def find_patient(fhir: PatientServer, identifier: Identifier) -> dict[str, Any] | None:
    query = f"{escape_search_value(identifier.system)}|{escape_search_value(identifier.value)}"
    found = [
        p
        for p in _resources(fhir.search("Patient", {"identifier": query}))
        if p.get("resourceType") == "Patient" and has_identifier(p, identifier)
    ]
    if len(found) > 1:
        ids = ", ".join(str(p.get("id")) for p in found)
        raise PatientError(
            f"{len(found)} Patients carry the identifier of system {identifier.system!r}: {ids}"
        )
    return found[0] if found else None


def _add_identifier(fhir: PatientServer, patient: dict[str, Any], identifier: Identifier) -> dict[str, Any]:
    for _ in range(MAX_IF_MATCH_ATTEMPTS):
        if has_identifier(patient, identifier):
            return patient
        updated = {**patient, "identifier": [*(patient.get("identifier") or []), identifier.as_fhir()]}
        version = (patient.get("meta") or {}).get("versionId")
        try:
            return fhir.update(updated, if_match=str(version) if version else None)
        except PreconditionFailed:
            log.info("Patient %s changed while adding an identifier; re-reading", patient.get("id"))
            current = fhir.read("Patient", patient["id"])
            if current is None:
                raise PatientError(
                    f"Patient {patient.get('id')} disappeared while adding an identifier"
                ) from None
            patient = current
    raise PatientError(f"Patient {patient.get('id')} kept changing; gave up adding the identifier")


def ensure_patient(fhir: PatientServer, external: Identifier, platform: Identifier) -> str:
    """The id of the Patient carrying both identifiers, creating or updating it as needed."""
    patient = find_patient(fhir, external)
    missing = platform
    if patient is None:
        patient = find_patient(fhir, platform)
        missing = external
    if patient is None:
        created = fhir.create(
            {"resourceType": "Patient", "identifier": [external.as_fhir(), platform.as_fhir()]}
        )
        return str(created["id"])
    patient = _add_identifier(fhir, patient, missing)
    return str(patient["id"])
