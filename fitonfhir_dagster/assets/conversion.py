"""MedTech templates and the Observations written to FHIR from the device messages.

No `from __future__ import annotations` here: Dagster inspects the context annotations at runtime.
"""

import random

import dagster as dg

from ..partitions import user_day_partitions
from ..pipeline.observations import ObservationsSummary, convert_user_day
from ..pipeline.templates import build_templates, store_templates, templates_for_conversion
from ..resources import FitOnFhirResource
from .imports import BACKFILL, FETCH_RETRY, _finish, device_messages
from .userdays import run_per_user_day

NO_DEAD_LETTERS = "no_dead_letters"
SAMPLE_VALIDATES = "written_sample_validates_r4b"
SAMPLE_SIZE = 20


@dg.asset(group_name="fit_on_fhir", kinds={"json"})
def medtech_templates(
    context: dg.AssetExecutionContext, fitonfhir: FitOnFhirResource
) -> dg.MaterializeResult:
    """The MedTech device and FHIR mappings used for conversion (and to configure a MedTech service)."""
    ports = fitonfhir.ports
    device, fhir, origin = build_templates(ports)
    store_templates(ports, device, fhir)
    return dg.MaterializeResult(
        metadata={
            "origin": origin,
            "device_templates": len(device.get("template", [])),
            "fhir_templates": len(fhir.get("template", [])),
        }
    )


def _observations_metadata(s: ObservationsSummary) -> dict[str, dg.MetadataValue]:
    return {
        "observations": dg.MetadataValue.int(s.observations),
        "created": dg.MetadataValue.int(s.created),
        "updated": dg.MetadataValue.int(s.updated),
        "unchanged": dg.MetadataValue.int(s.unchanged),
        "dead_lettered": dg.MetadataValue.int(s.dead_letters),
        "dead_letter_reasons": dg.MetadataValue.json(s.dead_letter_reasons),
    }


@dg.asset(
    deps=[device_messages, medtech_templates],
    partitions_def=user_day_partitions,
    retry_policy=FETCH_RETRY,
    backfill_policy=BACKFILL,
    group_name="fit_on_fhir",
    kinds={"fhir"},
    check_specs=[
        dg.AssetCheckSpec(NO_DEAD_LETTERS, asset="fhir_observations"),
        dg.AssetCheckSpec(SAMPLE_VALIDATES, asset="fhir_observations"),
    ],
)
def fhir_observations(
    context: dg.AssetExecutionContext, fitonfhir: FitOnFhirResource
) -> dg.MaterializeResult:
    """Observations built from the device messages with MedTech's rules, written to the FHIR server."""
    ports = fitonfhir.ports
    templates = templates_for_conversion(ports)
    fhir = fitonfhir.fhir
    outcome = run_per_user_day(context, lambda day, user: convert_user_day(ports, fhir, templates, day, user))
    _finish(context, outcome, _observations_metadata)
    dead = {k: s.dead_letter_reasons for k, s in outcome.done.items() if s.dead_letters}
    written = [i for s in outcome.done.values() for i in s.written_ids]
    sample = random.sample(written, min(SAMPLE_SIZE, len(written)))
    problems = validate_sample(fhir, sample)
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name=NO_DEAD_LETTERS,
                passed=not dead,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"dead_letters_by_partition": dg.MetadataValue.json(dead)},
            ),
            dg.AssetCheckResult(
                check_name=SAMPLE_VALIDATES,
                passed=not problems,
                metadata={"sampled": len(sample), "problems": dg.MetadataValue.json(problems)},
            ),
        ]
    )


def validate_sample(fhir, ids: list[str]) -> dict[str, str]:
    """Read back written Observations and validate them with the R4B models (slow, so only a sample)."""
    from fhir.resources.R4B.observation import Observation
    from pydantic import ValidationError

    problems: dict[str, str] = {}
    for obs_id, resource in fhir.read_many("Observation", ids).items():
        try:
            Observation.model_validate(resource)
        except ValidationError as exc:
            problems[obs_id] = str(exc)[:500]
    for missing in set(ids) - set(fhir.read_many("Observation", ids)):
        problems[missing] = "written but not readable"
    return problems
