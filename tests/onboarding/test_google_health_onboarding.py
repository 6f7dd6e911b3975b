"""Onboarding for Google Health: the same routes and security, googlehealth scopes, the same user and Patient."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.googlefit.fit_client import GoogleFitClient
from fitonfhir_dagster.googlehealth.health_catalog import scopes_for

from .conftest import start_with_sandbox
from .test_flow import APPROVED, SYSTEM, back, consent, patients_of


def _requested_scopes(app, external_id: str) -> list[str]:
    params = {"external_id": external_id, "external_system": SYSTEM, "redirect_url": APPROVED}
    auth_url = app.get("/api/googlefit/authorize", params=params).json()["authUrl"]
    return parse_qs(urlsplit(auth_url).query)["scope"][0].split()


def test_a_health_onboarding_asks_only_for_profile_and_the_googlehealth_readonly_scopes(start_app, sandbox):
    app = start_with_sandbox(
        start_app, sandbox, FITONFHIR_REDIRECT_URLS=APPROVED, FITONFHIR_DEFAULT_SOURCE="google-health"
    )
    assert _requested_scopes(app, "health-0") == [
        "https://www.googleapis.com/auth/userinfo.profile",
        "https://www.googleapis.com/auth/googlehealth.health_metrics_and_measurements.readonly",
        "https://www.googleapis.com/auth/googlehealth.activity_and_fitness.readonly",
    ]
    only_steps = start_with_sandbox(
        start_app,
        sandbox,
        FITONFHIR_REDIRECT_URLS=APPROVED,
        FITONFHIR_DEFAULT_SOURCE="google-health",
        FITONFHIR_HEALTH_DATA_TYPES="steps",
    )
    assert _requested_scopes(only_steps, "health-0") == list(scopes_for(["steps"]))


def test_a_new_user_onboarded_for_health_is_a_health_user_from_the_start(start_app, sandbox):
    app = start_with_sandbox(
        start_app, sandbox, FITONFHIR_REDIRECT_URLS=APPROVED, FITONFHIR_DEFAULT_SOURCE="google-health"
    )
    assert "error" not in back(consent(app, sandbox, "health-1"))
    [user] = app.users.list()
    assert (user.source, user.cutover_day) == ("google-health", "")
    assert "googlehealth.activity_and_fitness.readonly" in user.scopes


def test_a_fit_user_who_consents_to_health_keeps_key_and_patient_and_cuts_over_tomorrow(start_app, sandbox):
    fit_app = start_with_sandbox(start_app, sandbox, FITONFHIR_REDIRECT_URLS=APPROVED)
    email = "fit.then.health@example.com"
    back(consent(fit_app, sandbox, "moving-1", email=email))
    [fit_user] = fit_app.users.list()
    health_app = start_app(  # the same users table and vault, now onboarding for Google Health
        fhir=FhirClient(sandbox.fhir_url, max_attempts=1),
        users=fit_app.users,
        vault=fit_app.vault,
        FITONFHIR_SANDBOX_URL=sandbox.url,
        FITONFHIR_REDIRECT_URLS=APPROVED,
        FITONFHIR_DEFAULT_SOURCE="google-health",
    )

    assert "error" not in back(consent(health_app, sandbox, "moving-1", email=email))

    [moved] = health_app.users.list()
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert (moved.key, moved.patient_id) == (fit_user.key, fit_user.patient_id)
    assert (moved.source, moved.cutover_day) == ("google-health", tomorrow)
    assert len(patients_of(sandbox, "moving-1")) == 1
    # the grant is widened (include_granted_scopes), so the one refresh token still reads Fit before the cut-over
    with GoogleFitClient(health_app.settings, health_app.vault.get(moved.key)) as fit:
        assert any(s["dataType"]["name"] == "com.google.heart_rate.bpm" for s in fit.list_data_sources())
