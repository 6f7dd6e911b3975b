"""Asset check results computed from the step summaries of one run."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import dagster as dg

from ..pipeline.datasets import DatasetsSummary
from ..pipeline.messages import MessagesSummary
from ..pipeline.observations import ObservationsSummary

POINTS_IN_DAY = "points_within_partition_day"
NO_BAD_POINTS = "no_malformed_points"
EXACTLY_ONCE = "every_point_in_exactly_one_message"
NO_DEAD_LETTERS = "no_dead_letters"
POINTS_ACCOUNTED = "every_point_observed_or_dead_lettered"
SAMPLE_VALIDATES = "written_sample_validates_r4b"
SAMPLE_SIZE = 20

CHECK_SPECS = [
    dg.AssetCheckSpec(POINTS_IN_DAY, asset="fit_datasets"),
    dg.AssetCheckSpec(NO_BAD_POINTS, asset="fit_datasets"),
    dg.AssetCheckSpec(EXACTLY_ONCE, asset="device_messages"),
    dg.AssetCheckSpec(NO_DEAD_LETTERS, asset="fhir_observations"),
    dg.AssetCheckSpec(POINTS_ACCOUNTED, asset="fhir_observations"),
    dg.AssetCheckSpec(SAMPLE_VALIDATES, asset="fhir_observations"),
]


def datasets_checks(done: Mapping[str, DatasetsSummary]) -> list[dg.AssetCheckResult]:
    outside = {k: s.outside_day for k, s in done.items() if s.outside_day}
    bad = {k: s.bad_points for k, s in done.items() if s.bad_points}
    return [
        dg.AssetCheckResult(
            asset_key="fit_datasets",
            check_name=POINTS_IN_DAY,
            passed=not outside,
            metadata={"points_outside_day": dg.MetadataValue.json(outside)},
        ),
        dg.AssetCheckResult(
            asset_key="fit_datasets",
            check_name=NO_BAD_POINTS,
            passed=not bad,
            severity=dg.AssetCheckSeverity.WARN,
            description="Malformed points are dead-lettered in the archive (badPoints) with their reason.",
            metadata={"bad_points_by_partition": dg.MetadataValue.json(bad)},
        ),
    ]


def messages_checks(done: Mapping[str, MessagesSummary]) -> list[dg.AssetCheckResult]:
    wrong = {
        k: {"missing": s.missing_points, "extra": s.duplicated_points}
        for k, s in done.items()
        if s.missing_points or s.duplicated_points
    }
    return [
        dg.AssetCheckResult(
            asset_key="device_messages",
            check_name=EXACTLY_ONCE,
            passed=not wrong,
            metadata={"mismatches": dg.MetadataValue.json(wrong)},
        )
    ]


def observations_checks(done: Mapping[str, ObservationsSummary], fhir: Any) -> list[dg.AssetCheckResult]:
    dead = {k: s.dead_letter_reasons for k, s in done.items() if s.dead_letters or s.points_unmatched}
    lost = {
        k: {
            "points_in": s.points_in,
            "observed": s.points_observed,
            "dead_lettered": s.points_dead_lettered,
            "unmatched": s.points_unmatched,
        }
        for k, s in done.items()
        if s.points_unaccounted
    }
    written = [i for s in done.values() for i in s.written_ids]
    sample = random.sample(written, min(SAMPLE_SIZE, len(written)))
    problems = validate_sample(fhir, sample)
    return [
        dg.AssetCheckResult(
            asset_key="fhir_observations",
            check_name=NO_DEAD_LETTERS,
            passed=not dead,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"dead_letters_by_partition": dg.MetadataValue.json(dead)},
        ),
        dg.AssetCheckResult(
            asset_key="fhir_observations",
            check_name=POINTS_ACCOUNTED,
            passed=not lost,
            description="points in == points in Observations + dead-lettered + no template matched",
            metadata={"unaccounted_by_partition": dg.MetadataValue.json(lost)},
        ),
        dg.AssetCheckResult(
            asset_key="fhir_observations",
            check_name=SAMPLE_VALIDATES,
            passed=not problems,
            metadata={"sampled": len(sample), "problems": dg.MetadataValue.json(problems)},
        ),
    ]


def validate_sample(fhir: Any, ids: list[str]) -> dict[str, str]:
    """Read back written Observations and validate them with the R4B models (slow, so only a sample)."""
    from fhir.resources.R4B.observation import Observation
    from pydantic import ValidationError

    problems: dict[str, str] = {}
    found = fhir.read_many("Observation", ids) if ids else {}
    for obs_id, resource in found.items():
        try:
            Observation.model_validate(resource)
        except ValidationError as exc:
            problems[obs_id] = str(exc)[:500]
    for missing in set(ids) - set(found):
        problems[missing] = "written but not readable"
    return problems
