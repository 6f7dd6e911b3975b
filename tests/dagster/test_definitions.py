"""The code location loads and has the shape the README describes."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from fitonfhir_dagster.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_are_loadable_with_the_documented_assets_checks_and_automation():
    definitions = defs()  # once: validate_loadable leaves an ephemeral instance to the garbage collector
    graph = definitions.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "fit_datasets",
        "device_messages",
        "medtech_templates",
        "fhir_observations",
    }
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {
        "points_within_partition_day",
        "no_malformed_points",
        "every_point_in_exactly_one_message",
        "no_dead_letters",
        "written_sample_validates_r4b",
        "every_point_observed_or_dead_lettered",
        "yesterday_imported_for_every_active_user",
    }
    assert definitions.resolve_sensor_def("users_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert (
        definitions.resolve_schedule_def("daily_import_schedule").default_status
        == dg.DefaultScheduleStatus.RUNNING
    )
    fit = definitions.resolve_assets_def("fit_datasets")
    assert fit.op.pool == "google_fit_api"
    assert fit.can_subset
    dg.Definitions.validate_loadable(definitions)


def test_dagster_cli_validates_the_workspace():
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "All code locations passed validation" in done.stderr + done.stdout
