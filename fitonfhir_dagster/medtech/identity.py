"""Patient and Device resolution for Observations: MedTech's Create and Lookup modes, and ours.

* ``CreateIdentity``: ids as MedTech's Create mode makes them when it creates the resources,
  ``sha256("<system>_<value>")`` (``system`` empty for the Patient), computed offline. Like MedTech,
  a Device that already exists keeps its first Patient link (the message's patient is not compared).
* ``LookupIdentity``: the Device must exist (by identifier) and be linked to a Patient.
* ``PatientReferenceIdentity``: references our onboarded Patient by id, given patientIdentifier -> id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fitonfhir_dagster.medtech.medtech_errors import (
    FhirResourceNotFoundException,
    MultipleResourceFoundException,
    ResourceIdentityNotDefinedException,
)

IOMT_SYSTEM = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/"


def hashed_id(system: str | None, value: str) -> str:
    """MedTech's deterministic resource id: lowercase hex SHA-256 of ``<system>_<value>``."""
    return hashlib.sha256(f"{system or ''}_{value}".encode()).hexdigest()


@dataclass(frozen=True)
class ResolvedIdentity:
    """Logical ids for an Observation, plus the Patient/Device resources this mode creates (if any)."""

    patient_id: str
    device_id: str
    encounter_id: str | None = None
    patient: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    device: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)


class IdentityResolver:
    """Resolves a measurement group's identifiers to FHIR logical ids; raises ``ConversionError``s."""

    def __init__(self) -> None:
        self.patients: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}

    def resolve(
        self, device_identifier: str, patient_identifier: str | None, encounter_identifier: str | None
    ) -> ResolvedIdentity:
        raise NotImplementedError


def _device_resource(device_id: str, identifier: str, system: str | None, patient_id: str) -> dict[str, Any]:
    ident: dict[str, str] = {"system": system, "value": identifier} if system else {"value": identifier}
    return {
        "resourceType": "Device",
        "id": device_id,
        "identifier": [ident],
        "patient": {"reference": f"Patient/{patient_id}"},
    }


def _resolve_encounter(encounters: Mapping[str, str], encounter_identifier: str | None) -> str | None:
    if encounter_identifier is None:
        return None
    found = encounters.get(encounter_identifier)
    if found is None:
        raise FhirResourceNotFoundException(f"Encounter with identifier {encounter_identifier!r} not found")
    return found


class CreateIdentity(IdentityResolver):
    """MedTech Create mode, offline: the Patient and Device it would create, with the same ids."""

    def __init__(self, device_system: str | None = None, encounters: Mapping[str, str] | None = None):
        super().__init__()
        self.device_system = device_system or None
        self.encounters = dict(encounters or {})
        self._links: dict[str, str] = {}

    def resolve(
        self, device_identifier: str, patient_identifier: str | None, encounter_identifier: str | None
    ) -> ResolvedIdentity:
        device_id = hashed_id(self.device_system, device_identifier)
        linked = self._links.get(device_identifier)
        if linked is not None:
            # Lookup path: the Device exists and its Patient link wins; the encounter must exist.
            encounter = _resolve_encounter(self.encounters, encounter_identifier)
            return ResolvedIdentity(
                linked, device_id, encounter, self.patients[linked], self.devices[device_id]
            )
        if not patient_identifier:
            raise ResourceIdentityNotDefinedException(
                f"Patient identity is not defined for device {device_identifier!r}: Create mode needs a patient id"
            )
        patient_id = hashed_id(None, patient_identifier)
        self.patients.setdefault(
            patient_id,
            {"resourceType": "Patient", "id": patient_id, "identifier": [{"value": patient_identifier}]},
        )
        self.devices[device_id] = _device_resource(
            device_id, device_identifier, self.device_system, patient_id
        )
        self._links[device_identifier] = patient_id
        # Creation path: MedTech attaches no encounter here.
        return ResolvedIdentity(
            patient_id, device_id, None, self.patients[patient_id], self.devices[device_id]
        )


@dataclass(frozen=True)
class DeviceLink:
    device_id: str
    patient_id: str | None


class LookupIdentity(IdentityResolver):
    """MedTech Lookup mode against known Devices (identifier -> id and Patient link)."""

    def __init__(
        self,
        devices: Mapping[str, DeviceLink | list[DeviceLink]],
        encounters: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self._devices = {k: v if isinstance(v, list) else [v] for k, v in devices.items()}
        self.encounters = dict(encounters or {})

    @classmethod
    def from_resources(
        cls,
        devices: Iterable[Mapping[str, Any]],
        encounters: Iterable[Mapping[str, Any]] = (),
        system: str | None = None,
    ) -> LookupIdentity:
        """Index FHIR Device (and Encounter) resources by identifier value (and ``system`` if given)."""
        table: dict[str, list[DeviceLink]] = {}
        for device in devices:
            reference = (device.get("patient") or {}).get("reference") or ""
            patient_id = reference.split("/", 1)[1] if reference.startswith("Patient/") else None
            for ident in device.get("identifier") or []:
                if system is None or ident.get("system") == system:
                    table.setdefault(ident.get("value", ""), []).append(DeviceLink(device["id"], patient_id))
        encounter_ids = {
            ident.get("value", ""): enc["id"] for enc in encounters for ident in (enc.get("identifier") or [])
        }
        return cls(table, encounter_ids)

    def resolve(
        self, device_identifier: str, patient_identifier: str | None, encounter_identifier: str | None
    ) -> ResolvedIdentity:
        found = self._devices.get(device_identifier) or []
        if not found:
            raise FhirResourceNotFoundException(f"Device with identifier {device_identifier!r} not found")
        if len(found) > 1:
            raise MultipleResourceFoundException(
                f"{len(found)} Devices have the identifier {device_identifier!r}"
            )
        link = found[0]
        if not link.patient_id:
            raise FhirResourceNotFoundException(f"Device {link.device_id} is not linked to a Patient")
        return ResolvedIdentity(
            link.patient_id, link.device_id, _resolve_encounter(self.encounters, encounter_identifier)
        )


class PatientReferenceIdentity(IdentityResolver):
    """Reference the onboarded Patient by id; Devices get Create-mode ids and link to that Patient."""

    def __init__(
        self,
        patient_ids: Mapping[str, str],
        device_system: str | None = None,
        encounters: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self.patient_ids = patient_ids
        self.device_system = device_system or None
        self.encounters = dict(encounters or {})

    def resolve(
        self, device_identifier: str, patient_identifier: str | None, encounter_identifier: str | None
    ) -> ResolvedIdentity:
        if not patient_identifier:
            raise ResourceIdentityNotDefinedException(
                f"Patient identity is not defined for device {device_identifier!r}: the message has no patient id"
            )
        patient_id = self.patient_ids.get(patient_identifier)
        if not patient_id:
            raise FhirResourceNotFoundException(
                "no onboarded Patient is mapped for the message's patientIdentifier"
                f" (device {device_identifier!r}); onboard the user or fix the mapping"
            )
        device_id = hashed_id(self.device_system, device_identifier)
        device = self.devices.setdefault(
            device_id, _device_resource(device_id, device_identifier, self.device_system, patient_id)
        )
        encounter = _resolve_encounter(self.encounters, encounter_identifier)
        return ResolvedIdentity(patient_id, device_id, encounter, None, device)
