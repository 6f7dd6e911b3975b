"""Sandbox faults through the real steps: no fault may lose a day, a signal or a point silently."""

import orjson
import pytest

from fitonfhir_dagster.config import Settings
from fitonfhir_dagster.pipeline.datasets import datasets_object, fetch_user_day
from fitonfhir_dagster.pipeline.messages import build_user_day_messages, load_messages
from fitonfhir_dagster.pipeline.ports import Ports
from fitonfhir_dagster.sandbox.testing import running_sandbox
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault

DAY = "2026-11-20"
EMAIL = "faulty.day@example.com"
HR_MERGED = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("fault-days")) as sandbox:
        yield sandbox


@pytest.fixture
def ports(tmp_path, sandbox):
    sandbox.clear_faults()
    env = {"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_SANDBOX_URL": sandbox.url}
    settings = Settings.from_env(env)
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    yield Ports(settings, users, LocalTokenVault(tmp_path / "vault"), LocalArchive(tmp_path / "archive"))
    sandbox.clear_faults()


def _onboard(ports, sandbox):
    tokens = sandbox.onboard(EMAIL)
    user = ports.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(EMAIL), google_issuer=sandbox.url, patient_id="patient-1"
    )
    ports.vault.put(user.key, tokens["refresh_token"])
    return user


def test_a_page_without_data_source_id_is_supplied_and_the_day_goes_through(ports, sandbox):
    user = _onboard(ports, sandbox)
    sandbox.add_fault(path="merge_heart_rate_bpm/datasets/", malformed="missing_fields", count=1)

    fetched = fetch_user_day(ports, DAY, user.key)
    summary = build_user_day_messages(ports, DAY, user.key)  # was: KeyError 'dataSourceId'

    assert fetched.supplied_fields == 3 and fetched.bad_points == 1
    document = orjson.loads(ports.archive.get(datasets_object(DAY, user.key)))
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
    hr = [m for m in load_messages(ports, DAY, user.key) if m["dataSourceId"] == HR_MERGED]
    assert hr and all("minStartTimeNs" in m for m in hr)


def test_a_truncated_body_is_retried_and_loses_nothing(ports, sandbox):
    user = _onboard(ports, sandbox)
    clean = fetch_user_day(ports, DAY, user.key)
    sandbox.add_fault(path="merge_heart_rate_bpm/datasets/", malformed="not_json", count=1)

    fetched = fetch_user_day(ports, DAY, user.key)

    assert (fetched.points, fetched.bad_points) == (clean.points, 0)
    assert fetched.api_calls == clean.api_calls + 1
