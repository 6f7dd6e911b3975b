"""Sandbox faults through the real steps: no fault may lose a day, a signal or a point silently."""

import orjson
import pytest

from fitonfhir_dagster.defs.checks import NO_DEAD_LETTERS, POINTS_ACCOUNTED, observations_checks
from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.pipeline.conversion_templates import build_templates
from fitonfhir_dagster.pipeline.datasets import datasets_object, fetch_user_day
from fitonfhir_dagster.pipeline.messages import build_user_day_messages, load_messages
from fitonfhir_dagster.pipeline.observations import DEAD_LETTERS, ObservationsSummary, convert_user_day
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive, object_name
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import running_sandbox
from fitonfhir_sandbox.synthetic import ORPHAN_STREAM_ID

DAY = "2026-11-20"
EMAIL = "faulty.day@example.com"
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("fault-days")) as sandbox:
        yield sandbox


@pytest.fixture
def stores(tmp_path, sandbox):
    sandbox.clear_faults()
    env = {"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_SANDBOX_URL": sandbox.url}
    settings = Settings.from_env(env)
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    yield StepStores(settings, users, LocalTokenVault(tmp_path / "vault"), LocalArchive(tmp_path / "archive"))
    sandbox.clear_faults()


def _onboard(stores, sandbox):
    tokens = sandbox.onboard(EMAIL)
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(EMAIL), google_issuer=sandbox.url, patient_id="patient-1"
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    return user


def test_a_page_without_data_source_id_is_supplied_and_the_day_goes_through(stores, sandbox):
    user = _onboard(stores, sandbox)
    sandbox.add_fault(path="merge_heart_rate_bpm/datasets/", malformed="missing_fields", count=1)

    fetched = fetch_user_day(stores, DAY, user.key)
    summary = build_user_day_messages(stores, DAY, user.key)  # was: KeyError 'dataSourceId'

    assert fetched.supplied_fields == 3 and fetched.bad_points == 1
    document = orjson.loads(stores.archive.get(datasets_object(DAY, user.key)))
    assert document["suppliedFields"] == [
        {
            "stream": HR_MERGED,
            "page": 0,
            "fields": {"dataSourceId": 1, "minStartTimeNs": 1, "maxEndTimeNs": 1},
        }
    ]
    assert "endTimeNanos" in document["badPoints"][0]["reason"]
    assert (summary.missing_points, summary.duplicated_points) == (0, 0)
    assert summary.points == fetched.points
    hr = [m for m in load_messages(stores, DAY, user.key) if m["dataSourceId"] == HR_MERGED]
    assert hr and all("minStartTimeNs" in m for m in hr)


def test_a_truncated_body_is_retried_and_loses_nothing(stores, sandbox):
    user = _onboard(stores, sandbox)
    clean = fetch_user_day(stores, DAY, user.key)
    sandbox.add_fault(path="merge_heart_rate_bpm/datasets/", malformed="not_json", count=1)

    fetched = fetch_user_day(stores, DAY, user.key)

    assert (fetched.points, fetched.bad_points) == (clean.points, 0)
    assert fetched.api_calls == clean.api_calls + 1


def _all_streams_ports(tmp_path, sandbox, style):
    env = {
        "FITONFHIR_HOME": str(tmp_path / style),
        "FITONFHIR_SANDBOX_URL": sandbox.url,
        "FITONFHIR_STREAMS": "all",
        "FITONFHIR_TEMPLATE_STYLE": style,
    }
    users = SqliteUsersTable(tmp_path / f"{style}-users.sqlite3")
    return StepStores(
        Settings.from_env(env),
        users,
        LocalTokenVault(tmp_path / f"{style}-vault"),
        LocalArchive(tmp_path / f"{style}-archive"),
    )


@pytest.mark.parametrize("style", ["standard", "original"])
def test_points_of_a_stream_no_template_names_are_observed_or_counted_and_archived(tmp_path, sandbox, style):
    stores = _all_streams_ports(tmp_path, sandbox, style)
    user = _onboard(stores, sandbox)
    sandbox.add_fault(orphan_source=True, sub=user.google_sub)
    fetched = fetch_user_day(stores, DAY, user.key)
    messages = build_user_day_messages(stores, DAY, user.key)
    document = orjson.loads(stores.archive.get(datasets_object(DAY, user.key)))
    orphan_points = sum(len(p["point"]) for p in document["pages"].get(ORPHAN_STREAM_ID, []))
    assert orphan_points > 0 and messages.points == fetched.points
    device, fhir_mapping, _ = build_templates(stores.settings)
    fhir = FhirClient(sandbox.fhir_url)

    summary = convert_user_day(stores, fhir, (device, fhir_mapping), DAY, user.key)

    assert summary.points_in == fetched.points
    assert summary.points_unaccounted == 0 and summary.dead_letters == 0
    checks = {c.check_name: c.passed for c in observations_checks({f"{DAY}|{user.key}": summary}, fhir)}
    assert checks[POINTS_ACCOUNTED] is True
    letters = [
        orjson.loads(line)
        for line in stores.archive.get(
            object_name(DEAD_LETTERS, DAY, user.key, "dead_letters.ndjson")
        ).splitlines()
    ]
    if style == "standard":  # the catch-all template of the data type converts the orphan stream
        assert summary.points_unmatched == 0 and letters == []
        assert summary.points_observed == fetched.points
        assert checks[NO_DEAD_LETTERS] is True
    else:  # the original's templates (kept byte for byte) have none: counted, archived, flagged
        assert summary.points_unmatched == orphan_points
        assert summary.points_observed == fetched.points - orphan_points
        assert summary.dead_letter_reasons == {"TemplateNotFoundException": orphan_points}
        assert len(letters) == orphan_points
        assert all(ORPHAN_STREAM_ID in x["error"] and "no template matched" in x["error"] for x in letters)
        assert checks[NO_DEAD_LETTERS] is False


def test_the_reconciliation_check_fails_when_points_are_unaccounted():
    lost = ObservationsSummary("u-1", DAY, points_in=857, points_observed=854)
    fine = ObservationsSummary("u-2", DAY, points_in=857, points_observed=854, points_unmatched=3)
    results = observations_checks({f"{DAY}|u-1": lost, f"{DAY}|u-2": fine}, None)
    (check,) = [c for c in results if c.check_name == POINTS_ACCOUNTED]
    assert check.passed is False
    assert check.metadata["unaccounted_by_partition"].data == {
        f"{DAY}|u-1": {"points_in": 857, "observed": 854, "dead_lettered": 0, "unmatched": 0}
    }
