"""The import through Dagster: fetched, archived, converted and written once; bad users never block others."""

import uuid

import dagster as dg
import orjson
import pytest

from fitonfhir_dagster.definitions import defs
from fitonfhir_dagster.defs.run_requests import range_run_request
from fitonfhir_dagster.defs.user_days import RUN_RETRY_ON_STEP_FAILURE
from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.stores.factory import open_archive, open_users_table
from fitonfhir_dagster.stores.users import UserState

DAY1, DAY2 = "2026-11-20", "2026-11-21"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _range_tags(first_user, last_user, first_day, last_day):
    from datetime import date

    return range_run_request(
        date.fromisoformat(first_day), date.fromisoformat(last_day), first_user, last_user, "t"
    ).tags


def _run(instance, first_user, last_user, first_day=DAY1, last_day=DAY2, run_id=None):
    tags = _range_tags(first_user, last_user, first_day, last_day)
    job = defs().resolve_job_def("user_day_import")
    return job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False, run_config=QUIET, run_id=run_id
    )


def _meta(result, asset, key):
    return {
        e.materialization.partition: e.materialization.metadata[key].value
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(asset) and key in e.materialization.metadata
    }


def _checks(result):
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture
def instance(world):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", [u.key for u in world.users])
        templates = dg.materialize(
            [defs().resolve_assets_def("medtech_templates")], instance=instance, run_config=QUIET
        )
        assert templates.success
        yield instance


def test_two_users_two_days_are_imported_once_and_rerunning_writes_nothing(world, instance):
    first, second = world.users
    result = _run(instance, first.key, second.key)
    assert result.success
    points = _meta(result, "fit_datasets", "points")
    assert len(points) == 4 and all(n > 0 for n in points.values())
    messages = _meta(result, "device_messages", "points")
    assert messages == points  # every fetched point went into the device messages
    created = _meta(result, "fhir_observations", "created")
    assert sum(created.values()) > 0
    assert _checks(result) == {
        "points_within_partition_day": True,
        "no_malformed_points": True,
        "every_point_in_exactly_one_message": True,
        "no_dead_letters": True,
        "every_point_observed_or_dead_lettered": True,
        "written_sample_validates_r4b": True,
    }
    # one summary row per user of the run (the partition plots mix users)
    [reconciled] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "every_point_observed_or_dead_lettered"
    ]
    rows = {r.data["user"]: r.data for r in reconciled.metadata["per_user"].value.records}
    assert set(rows) == {first.key, second.key}
    assert all(r["user_days"] == 2 and r["written"] > 0 and r["unmatched"] == 0 for r in rows.values())
    assert sum(r["written"] for r in rows.values()) == sum(created.values())
    fhir = FhirClient.from_settings(world.settings)
    total = fhir.search_bundle("Observation", {"_summary": "count"})["total"]
    patient_obs = fhir.search("Observation", {"subject": f"Patient/{first.patient_id}", "_count": "1000"})
    assert patient_obs and all(
        o["subject"]["reference"] == f"Patient/{first.patient_id}" for o in patient_obs
    )

    again = _run(instance, first.key, second.key)
    assert again.success
    assert sum(_meta(again, "fhir_observations", "created").values()) == 0
    assert sum(_meta(again, "fhir_observations", "updated").values()) == 0
    assert sum(_meta(again, "fhir_observations", "unchanged").values()) == sum(created.values())
    assert fhir.search_bundle("Observation", {"_summary": "count"})["total"] == total
    archive = open_archive(world.settings)
    names = list(archive.list("device_messages/"))
    assert len(names) == 4  # one NDJSON object per user-day, overwritten, never appended


def _refusals(result):
    """The one-line reasons of the user-days the run refused (AssetObservations, no step failure)."""
    return {
        e.event_specific_data.asset_observation.partition: e.event_specific_data.asset_observation.metadata[
            "not_imported"
        ].value
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
        and "not_imported" in e.event_specific_data.asset_observation.metadata
    }


def test_a_user_revoked_at_google_is_refused_in_one_line_and_the_others_are_imported(world, instance):
    first, second = world.users
    world.sandbox.revoke_user(first.google_sub)
    result = _run(instance, first.key, second.key, DAY1, DAY1)
    # An expected refusal is not a failure: no stack trace, no retry, nothing turns red.
    assert result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    reason = _refusals(result)[f"{DAY1}|{first.key}"]
    assert "user marked unauthorized" in reason and "\n" not in reason
    assert open_users_table(world.settings).get(first.key).state is UserState.UNAUTHORIZED
    # the other user of the same run went all the way to FHIR and is materialized in every asset
    for asset in ("fit_datasets", "device_messages", "fhir_observations"):
        materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert f"{DAY1}|{second.key}" in materialized and f"{DAY1}|{first.key}" not in materialized


def test_an_unexpected_error_for_one_user_day_is_isolated_and_retried(world, instance):
    first, second = world.users
    assert _run(instance, first.key, second.key, DAY1, DAY1).success
    archive = open_archive(world.settings)
    archive.put(f"fit_datasets/date={DAY1}/user={first.key}/datasets.json", b"{not json")  # corrupted object
    job = defs().resolve_job_def("user_day_import")
    result = job.execute_in_process(
        instance=instance,
        tags=_range_tags(first.key, second.key, DAY1, DAY1),
        asset_selection=[dg.AssetKey("device_messages"), dg.AssetKey("fhir_observations")],
        raise_on_error=False,
        run_config=QUIET,
    )
    assert not result.success
    assert result.retry_attempts_for_node("user_day_steps") == 3  # unknown errors count as transient
    # the step gave up after its own retries: the run is tagged so that run retries do not repeat them
    assert instance.get_run_by_id(result.run_id).tags[RUN_RETRY_ON_STEP_FAILURE] == "false"
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][-1]
    failed = failure.step_failure_data.user_failure_data.metadata["failed_partitions"].value
    assert failed == [f"{DAY1}|{first.key}"]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert "device_messages: JSONDecodeError" in str(retried[0].event_specific_data.error.cause)
    records = instance.fetch_materializations(dg.AssetKey("device_messages"), limit=100).records
    assert {r.partition_key for r in records if r.run_id == result.run_id} == {f"{DAY1}|{second.key}"}
    # the other user's checks are recorded and pass; the failing key is named with its reason
    exactly_once = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "every_point_in_exactly_one_message"
    ]
    assert exactly_once and all(e.passed for e in exactly_once)
    reasons = exactly_once[-1].metadata["not_checked"].value
    assert list(reasons) == [f"{DAY1}|{first.key}"] and "JSONDecodeError" in reasons[f"{DAY1}|{first.key}"]


def test_a_user_another_run_is_importing_fails_retryably_naming_that_run_and_the_run_id_owns_the_lease(
    world, instance, monkeypatch
):
    """Issue 9: a range run carries no per-user tag, so the users table's import lease keeps two runs of one
    user apart; the lease's owner is the Dagster run id."""
    first, second = world.users
    monkeypatch.setenv("FITONFHIR_USER_LEASE_WAIT_SECONDS", "0")
    users = open_users_table(world.settings)
    assert users.claim_import(first.key, "run-elsewhere", 300)
    result = _run(instance, first.key, second.key, DAY1, DAY1)
    assert not result.success
    assert result.retry_attempts_for_node("user_day_steps") == 3  # retryable: the other run will finish
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][-1]
    assert failure.step_failure_data.user_failure_data.metadata["failed_partitions"].value == [
        f"{DAY1}|{first.key}"
    ]
    assert f"user {first.key} is being imported by run run-elsewhere" in str(failure.step_failure_data.error)
    records = instance.fetch_materializations(dg.AssetKey("fhir_observations"), limit=100).records
    assert {r.partition_key for r in records if r.run_id == result.run_id} == {f"{DAY1}|{second.key}"}
    assert users.import_holder(first.key) == "run-elsewhere" and users.import_holder(second.key) is None

    # a run whose id holds the lease goes through, and releases it: the owner is the run id
    users.release_import(first.key, "run-elsewhere")
    run_id = str(uuid.uuid4())
    assert users.claim_import(first.key, run_id, 300)
    again = _run(instance, first.key, first.key, DAY1, DAY1, run_id=run_id)
    assert again.success and again.run_id == run_id
    assert users.import_holder(first.key) is None


def test_re_running_days_of_a_revoked_user_keeps_their_good_history(world, instance):
    first, second = world.users
    assert _run(instance, first.key, second.key, DAY1, DAY1).success
    open_users_table(world.settings).set_state(first.key, UserState.REVOKED, "user_initiated")
    result = _run(instance, first.key, second.key, DAY1, DAY1)
    assert result.success
    assert _refusals(result)[f"{DAY1}|{first.key}"].endswith("user is revoked; they must onboard again")
    # the days imported before the revocation stay materialized; the other user is imported again
    assert f"{DAY1}|{first.key}" in instance.get_materialized_partitions(dg.AssetKey("fhir_observations"))
    records = instance.fetch_materializations(dg.AssetKey("fhir_observations"), limit=100).records
    assert {r.partition_key for r in records if r.run_id == result.run_id} == {f"{DAY1}|{second.key}"}


def test_malformed_points_are_dead_lettered_with_their_reason_and_flagged(world, instance):
    first, _ = world.users
    world.sandbox.add_fault(path="merge_heart_rate_bpm/datasets/", malformed="wrong_value_type", count=1)
    result = _run(instance, first.key, first.key, DAY1, DAY1)
    assert result.success
    assert _meta(result, "fit_datasets", "bad_points") == {f"{DAY1}|{first.key}": 1}
    assert _checks(result)["no_malformed_points"] is False
    document = orjson.loads(
        open_archive(world.settings).get(f"fit_datasets/date={DAY1}/user={first.key}/datasets.json")
    )
    [bad] = document["badPoints"]
    assert "fpVal" in bad["reason"] or "intVal" in bad["reason"]


def test_google_outage_is_retried_by_the_client_and_the_run_still_succeeds(world, instance):
    first, _ = world.users
    world.sandbox.add_fault(path="/datasets/", status=503, count=2)
    result = _run(instance, first.key, first.key, DAY1, DAY1)
    assert result.success
    assert _meta(result, "fit_datasets", "api_calls")[f"{DAY1}|{first.key}"] >= 2


def test_observations_are_written_even_when_medtech_templates_was_never_materialized(world):
    first, _ = world.users
    with dg.instance_for_test() as fresh:  # like a users_sensor run on a new instance
        fresh.add_dynamic_partitions("users", [first.key])
        result = _run(fresh, first.key, first.key, DAY1, DAY1)
        assert result.success
        assert sum(_meta(result, "fhir_observations", "created").values()) > 0
    assert open_archive(world.settings).get("medtech_templates/fhirmapping.json") is not None


def test_create_identity_mode_writes_the_patients_and_devices_medtech_would_create(
    world, instance, monkeypatch
):
    first, _ = world.users
    monkeypatch.setenv("FITONFHIR_IDENTITY_MODE", "create")
    result = _run(instance, first.key, first.key, DAY1, DAY1)
    assert result.success
    fhir = FhirClient.from_settings(world.settings)
    observations = fhir.search("Observation", {"_count": "1000"})
    patients = {o["subject"]["reference"] for o in observations}
    assert len(patients) == 1 and patients != {f"Patient/{first.patient_id}"}
    [reference] = patients
    patient = fhir.read("Patient", reference.split("/")[1])
    assert patient and patient["identifier"][0]["value"] == first.google_sub
    device_ref = observations[0]["device"]["reference"]
    assert fhir.read("Device", device_ref.split("/")[1]) is not None
