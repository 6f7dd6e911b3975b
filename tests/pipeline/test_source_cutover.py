"""A Fit user who consents to Google Health: same key and Patient, Fit before the cut-over day, Health from it.

Real steps, real sandbox (Google OAuth + Fit REST + Health v4 + FHIR): every day of the span is imported
from exactly one source, none is skipped, and every point ends as an Observation.
"""

from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.googlehealth.health_catalog import DEFAULT_TYPE_NAMES, scopes_for
from fitonfhir_dagster.pipeline.conversion_templates import templates_for_conversion
from fitonfhir_dagster.pipeline.datasets import datasets_object, fetch_user_day
from fitonfhir_dagster.pipeline.messages import build_user_day_messages
from fitonfhir_dagster.pipeline.observations import convert_user_day
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable, UserState, source_for_day
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import DEFAULT_SCOPES, running_sandbox

EMAIL = "moving.to.health@example.com"
HEALTH_TYPE_SYSTEM = "https://fitonfhir.dev/fhir/CodeSystem/google-health-data-type"
FIT_TYPE_SYSTEM = "https://fitonfhir.dev/fhir/CodeSystem/google-fit-data-type"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("cutover")) as sandbox:
        sandbox.advance_clock(3 * 86_400)  # the days after the cut-over have data already
        yield sandbox


@pytest.fixture
def stores(tmp_path, sandbox):
    settings = Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_SANDBOX_URL": sandbox.url})
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    return StepStores(
        settings, users, LocalTokenVault(tmp_path / "vault"), LocalArchive(tmp_path / "archive")
    )


def _import(stores, fhir, templates, day: str, key: str):
    fetched = fetch_user_day(stores, day, key)
    messages = build_user_day_messages(stores, day, key)
    observations = convert_user_day(stores, fhir, templates, day, key)
    return fetched, messages, observations


def test_days_before_the_cut_over_come_from_fit_and_from_it_on_from_health(stores, sandbox):
    sub = sandbox.sub_for_email(EMAIL)
    fit = stores.users.upsert_onboarded(google_sub=sub, google_issuer=sandbox.url, patient_id="patient-9")
    stores.vault.put(fit.key, sandbox.onboard(EMAIL, scopes=DEFAULT_SCOPES)["refresh_token"])
    # consent to Google Health: the sandbox (like Google) widens the grant, so one refresh token reads both
    moved = stores.users.upsert_onboarded(
        google_sub=sub, google_issuer=sandbox.url, patient_id="patient-9", source="google-health"
    )
    stores.vault.put(moved.key, sandbox.onboard(EMAIL, scopes=scopes_for())["refresh_token"])
    cutover = date.fromisoformat(moved.cutover_day)
    assert (moved.key, moved.patient_id) == (fit.key, "patient-9")
    assert cutover == datetime.now(UTC).date() + timedelta(days=1)

    fhir = FhirClient.from_settings(stores.settings)
    templates = templates_for_conversion(stores)
    days = [(cutover + timedelta(days=i)).isoformat() for i in range(-2, 2)]
    sources = {}
    for day in days:
        fetched, messages, observations = _import(stores, fhir, templates, day, moved.key)
        document = orjson.loads(stores.archive.get(datasets_object(day, moved.key)))
        sources[day] = document.get("source", "google-fit")
        assert fetched.points > 0, f"{day} imported nothing"
        assert (messages.missing_points, messages.duplicated_points) == (0, 0)
        assert observations.points_unaccounted == 0 and observations.points_observed == fetched.points
        assert observations.dead_letters == 0 and observations.points_unmatched == 0
        systems = {
            c["system"]
            for obs_id in observations.written_ids
            for c in fhir.read_many("Observation", [obs_id])[obs_id]["code"]["coding"]
        }
        assert (HEALTH_TYPE_SYSTEM in systems) == (sources[day] == "google-health")
        assert (FIT_TYPE_SYSTEM in systems) == (sources[day] == "google-fit")

    assert sources == {d: source_for_day(moved, d) for d in days}
    assert list(sources.values()) == ["google-fit", "google-fit", "google-health", "google-health"]
    health_day = orjson.loads(stores.archive.get(datasets_object(days[2], moved.key)))
    assert set(health_day["pages"]) == set(DEFAULT_TYPE_NAMES)

    # re-importing any day writes nothing: no day is ever imported twice
    for day in days:
        assert _import(stores, fhir, templates, day, moved.key)[2].written == 0


def test_an_account_without_google_health_is_marked_and_not_retried(stores, sandbox):
    email = "no.health.yet+nohealth@example.com"
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(email),
        google_issuer=sandbox.url,
        patient_id="p-2",
        source="google-health",
    )
    stores.vault.put(user.key, sandbox.onboard(email, scopes=scopes_for())["refresh_token"])

    from fitonfhir_dagster.pipeline.step_errors import UserNotImportable

    with pytest.raises(UserNotImportable, match="ACCOUNT_NOT_LINKED") as caught:
        fetch_user_day(stores, "2026-11-20", user.key)
    assert not caught.value.retryable
    marked = stores.users.get(user.key)
    assert marked.state is UserState.UNAUTHORIZED and "ACCOUNT_NOT_LINKED" in marked.state_reason
