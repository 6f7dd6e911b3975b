"""Asset check results computed from the step summaries of one run.

One result per check and run (Dagster 1.13 records per-partition results only for single-key runs): its
metadata counts the user-days checked and failing, names the failing ones and sums what went wrong, so
the Plots tab has numbers. Results are recorded for the keys that succeeded even when others failed.
"""

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
    dg.AssetCheckSpec(
        POINTS_IN_DAY,
        asset="fit_datasets",
        description="Every archived point starts inside its partition's UTC day (the day rule: a point"
        " belongs to the day it starts in).",
    ),
    dg.AssetCheckSpec(
        NO_BAD_POINTS,
        asset="fit_datasets",
        description="WARN when Google returned malformed points; they are kept in the archive under"
        " badPoints with the stream, page, point and reason.",
    ),
    dg.AssetCheckSpec(
        EXACTLY_ONCE,
        asset="device_messages",
        description="Every archived point is in exactly one device message: none lost, none duplicated.",
    ),
    dg.AssetCheckSpec(
        NO_DEAD_LETTERS,
        asset="fhir_observations",
        description="WARN when MedTech rules dead-lettered a message or no template matched a point; the"
        " records are archived per user-day with MedTech's error names.",
    ),
    dg.AssetCheckSpec(
        POINTS_ACCOUNTED,
        asset="fhir_observations",
        description="Reconciliation across the three steps: points in == points in Observations +"
        " dead-lettered + no template matched, for every user-day.",
    ),
    dg.AssetCheckSpec(
        SAMPLE_VALIDATES,
        asset="fhir_observations",
        description=f"Up to {SAMPLE_SIZE} Observations written in the run are read back from the FHIR"
        " server and validated against the FHIR R4B models.",
    ),
]


def counts(done: Mapping[str, Any], failing: Mapping[str, Any], **totals: int) -> dict[str, Any]:
    """The numbers every check result carries: user-days checked and failing, plus the check's own sums."""
    return {
        "user_days_checked": dg.MetadataValue.int(len(done)),
        "user_days_failing": dg.MetadataValue.int(len(failing)),
        "failing_partitions": dg.MetadataValue.json(sorted(failing)),
        **{name: dg.MetadataValue.int(value) for name, value in totals.items()},
    }


def datasets_checks(done: Mapping[str, DatasetsSummary]) -> list[dg.AssetCheckResult]:
    outside = {k: s.outside_day for k, s in done.items() if s.outside_day}
    bad = {k: s.bad_points for k, s in done.items() if s.bad_points}
    return [
        dg.AssetCheckResult(
            asset_key="fit_datasets",
            check_name=POINTS_IN_DAY,
            passed=not outside,
            metadata=counts(done, outside, points_outside_day=sum(outside.values()))
            | {"points_outside_day_by_partition": dg.MetadataValue.json(outside)},
        ),
        dg.AssetCheckResult(
            asset_key="fit_datasets",
            check_name=NO_BAD_POINTS,
            passed=not bad,
            severity=dg.AssetCheckSeverity.WARN,
            description="Malformed points are dead-lettered in the archive (badPoints) with their reason.",
            metadata=counts(done, bad, bad_points=sum(bad.values()))
            | {"bad_points_by_partition": dg.MetadataValue.json(bad)},
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
            metadata=counts(
                done,
                wrong,
                points_missing=sum(w["missing"] for w in wrong.values()),
                points_duplicated=sum(w["extra"] for w in wrong.values()),
            )
            | {"mismatches": dg.MetadataValue.json(wrong)},
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
            metadata=counts(
                done,
                dead,
                dead_letters=sum(s.dead_letters for s in done.values()),
                points_unmatched=sum(s.points_unmatched for s in done.values()),
            )
            | {"dead_letters_by_partition": dg.MetadataValue.json(dead)},
        ),
        dg.AssetCheckResult(
            asset_key="fhir_observations",
            check_name=POINTS_ACCOUNTED,
            passed=not lost,
            description="points in == points in Observations + dead-lettered + no template matched",
            metadata=counts(
                done,
                lost,
                points_in=sum(s.points_in for s in done.values()),
                points_unaccounted=sum(s.points_unaccounted for s in done.values()),
            )
            | {"unaccounted_by_partition": dg.MetadataValue.json(lost), "per_user": per_user_table(done)},
        ),
        dg.AssetCheckResult(
            asset_key="fhir_observations",
            check_name=SAMPLE_VALIDATES,
            passed=not problems,
            metadata={
                "sampled": dg.MetadataValue.int(len(sample)),
                "invalid": dg.MetadataValue.int(len(problems)),
                "problems": dg.MetadataValue.json(problems),
            },
        ),
    ]


def per_user_table(done: Mapping[str, ObservationsSummary]) -> dg.TableMetadataValue:
    """One row per user of the run (the partition plots would mix every user in one series)."""
    rows: dict[str, dict[str, int]] = {}
    for summary in done.values():
        row = rows.setdefault(
            summary.user_key,
            {
                "user_days": 0,
                "points_in": 0,
                "observations": 0,
                "written": 0,
                "dead_lettered": 0,
                "unmatched": 0,
            },
        )
        row["user_days"] += 1
        row["points_in"] += summary.points_in
        row["observations"] += summary.observations
        row["written"] += summary.written
        row["dead_lettered"] += summary.points_dead_lettered
        row["unmatched"] += summary.points_unmatched
    columns = ["user_days", "points_in", "observations", "written", "dead_lettered", "unmatched"]
    return dg.MetadataValue.table(
        [dg.TableRecord({"user": user, **values}) for user, values in sorted(rows.items())],
        dg.TableSchema(
            columns=[dg.TableColumn("user", "string")] + [dg.TableColumn(c, "int") for c in columns]
        ),
    )


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
