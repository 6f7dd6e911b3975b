"""The whole onboarding against the sandbox (Google OAuth emulator + FHIR server), over HTTP:
authorize -> consent -> callback -> Patient, vault entry, users row; then revoke. Failures at any
step send the browser back with ``error=`` and leave users, vault and FHIR unchanged."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx2
import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.stores.users import UserState
from fitonfhir_sandbox.faults import FaultRule

from .conftest import start_with_sandbox

APPROVED = "https://app.example.org/fit/done"
SYSTEM = "urn:example:patients"


@pytest.fixture
def app(start_app, sandbox):
    sandbox.context.faults.clear()
    return start_with_sandbox(start_app, sandbox, FITONFHIR_REDIRECT_URLS=APPROVED)


def consent(app, sandbox, external_id, decision="allow", email=None, state="caller-1"):
    """Drive the sandbox consent like a browser would; returns our callback's response. Each patient
    gets their own Google account unless ``email`` says otherwise."""
    email = email or f"u{hashlib.sha256(external_id.encode()).hexdigest()[:12]}@example.com"
    params = {"external_id": external_id, "external_system": SYSTEM, "redirect_url": APPROVED, "state": state}
    auth_url = app.get("/api/googlefit/authorize", params=params).json()["authUrl"]
    page = app.client.get(auth_url)
    assert page.status_code == 200 and 'id="allow"' in page.text
    fields = dict(parse_qsl(urlsplit(auth_url).query))
    answer = app.client.post(
        sandbox.url + "/o/oauth2/v2/auth/decision", data={**fields, "decision": decision, "email": email}
    )
    assert answer.status_code == 302
    callback = answer.headers["location"]
    assert callback.startswith(app.url + "/api/googlefit/callback?")
    return app.get(callback[len(app.url) :])


def back(response):
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == APPROVED
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def patients(sandbox):
    return FhirClient(sandbox.fhir_url).search("Patient", {"_count": "1000"})


def patients_of(sandbox, external_id):
    return [
        p for p in patients(sandbox) if any(i.get("value") == external_id for i in p.get("identifier", []))
    ]


def refresh(sandbox, token):
    return httpx2.post(
        sandbox.url + "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": "fitonfhir-sandbox-client",
            "client_secret": "fitonfhir-sandbox-secret",
        },
    )


def test_consent_onboards_the_patient(app, sandbox):
    query = back(consent(app, sandbox, "flow-1"))
    assert query["state"] == "caller-1"
    assert "error" not in query and query["revoke_token"]
    [user] = app.users.list()
    assert user.state == UserState.ACTIVE
    assert (user.external_system, user.external_id, user.google_issuer) == (SYSTEM, "flow-1", sandbox.url)
    assert "fitness.heart_rate.read" in user.scopes
    [patient] = patients_of(sandbox, "flow-1")
    assert user.patient_id == patient["id"]
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {
        (SYSTEM, "flow-1"),
        (sandbox.url, user.google_sub),
    }
    refresh_token = app.vault.get(user.key)
    assert refresh_token and refresh(sandbox, refresh_token).status_code == 200


def test_onboarding_again_reuses_the_user_and_the_patient(app, sandbox):
    back(consent(app, sandbox, "flow-2"))
    [first] = app.users.list()
    first_token = app.vault.get(first.key)
    app.users.set_state(first.key, UserState.REVOKED, "user_initiated")
    back(consent(app, sandbox, "flow-2"))
    [again] = app.users.list()
    assert again.key == first.key and again.state == UserState.ACTIVE and again.state_reason == ""
    assert app.vault.get(again.key) != first_token  # prompt=consent always yields a fresh refresh token
    assert len(patients_of(sandbox, "flow-2")) == 1


def test_an_existing_patient_gets_the_google_identifier_added(app, sandbox):
    fhir = FhirClient(sandbox.fhir_url)
    existing = fhir.create({"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": "flow-3"}]})
    back(consent(app, sandbox, "flow-3", email="grace@example.com"))
    [user] = app.users.list()
    assert user.patient_id == existing["id"]
    updated = fhir.read("Patient", existing["id"])
    assert updated["meta"]["versionId"] != existing["meta"]["versionId"]
    assert {"system": sandbox.url, "value": user.google_sub} in updated["identifier"]
    assert len(patients_of(sandbox, "flow-3")) == 1


def test_denial_goes_back_with_an_error_and_writes_nothing(app, sandbox):
    before = len(patients(sandbox))
    query = back(consent(app, sandbox, "flow-4", decision="deny"))
    assert query == {"error": "access_denied", "state": "caller-1"}
    assert app.users.list() == [] and not list((app.settings.home / "vault").glob("*.token"))
    assert len(patients(sandbox)) == before


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FaultRule(path="^/token$", method="POST", status=500), "token_exchange_failed"),
        (FaultRule(path="^/fhir/Patient$", method="POST", status=403), "fhir_error"),
        (FaultRule(path="^/fhir/Patient$", method="GET", status=500, count=None), "fhir_error"),
    ],
    ids=["google-token-endpoint", "fhir-create", "fhir-search"],
)
def test_a_failing_step_goes_back_with_an_error_and_writes_nothing(app, sandbox, fault, reason):
    before = len(patients(sandbox))
    sandbox.context.faults.add(fault)
    try:
        query = back(consent(app, sandbox, "flow-5"))
    finally:
        sandbox.context.faults.clear()
    assert query == {"error": reason, "state": "caller-1"}
    assert app.users.list() == [] and not list((app.settings.home / "vault").glob("*.token"))
    assert len(patients(sandbox)) == before


def test_a_vault_failure_leaves_the_user_unimportable(start_app, sandbox):
    class BrokenVault:
        def put(self, user_key, refresh_token):
            raise OSError("disk full")

        def get(self, user_key):
            return None

        def delete(self, user_key):
            pass

    app = start_with_sandbox(start_app, sandbox, vault=BrokenVault(), FITONFHIR_REDIRECT_URLS=APPROVED)
    query = back(consent(app, sandbox, "flow-6"))
    assert query["error"] == "vault_error"
    assert app.users.list() == []


@pytest.mark.parametrize(
    "external_id",
    ["x' OR '1'='1", "a,b", "*", "50%_", 'p"; DROP TABLE users; --', "../../etc/passwd", "$everything"],
)
def test_identifiers_are_data_not_syntax(app, sandbox, external_id):
    back(consent(app, sandbox, external_id, email="inject@example.com"))
    back(consent(app, sandbox, external_id, email="inject@example.com"))  # found again, not duplicated
    [user] = app.users.list()
    assert user.external_id == external_id
    [patient] = patients_of(sandbox, external_id)
    assert patient["id"] == user.patient_id
    assert {"system": SYSTEM, "value": external_id} in patient["identifier"]


def test_revoke_with_the_handed_out_token_revokes_at_google(app, sandbox):
    query = back(consent(app, sandbox, "flow-7"))
    [user] = app.users.list()
    refresh_token = app.vault.get(user.key)
    response = app.post(
        "/api/googlefit/revoke",
        data={"external_system": SYSTEM, "external_id": "flow-7", "revoke_token": query["revoke_token"]},
    )
    assert response.json() == {"revoked": 1}
    assert refresh(sandbox, refresh_token).json()["error"] == "invalid_grant"
    assert app.vault.get(user.key) is None
    revoked = app.users.get(user.key)
    assert (revoked.state, revoked.state_reason) == (UserState.REVOKED, "user_initiated")


def test_a_second_google_account_under_the_same_identity_revokes_only_itself(app, sandbox):
    victim_query = back(consent(app, sandbox, "flow-10", email="victim-10@example.com"))
    intruder_query = back(consent(app, sandbox, "flow-10", email="intruder-10@example.com"))
    victim = app.users.find_by_google_sub(sandbox.sub_for_email("victim-10@example.com"))
    intruder = app.users.find_by_google_sub(sandbox.sub_for_email("intruder-10@example.com"))
    assert victim_query["revoke_token"] != intruder_query["revoke_token"]
    victim_refresh = app.vault.get(victim.key)
    response = app.post(
        "/api/googlefit/revoke",
        data={
            "external_system": SYSTEM,
            "external_id": "flow-10",
            "revoke_token": intruder_query["revoke_token"],
        },
    )
    assert response.json() == {"revoked": 1}
    assert app.users.get(intruder.key).state == UserState.REVOKED
    assert app.users.get(victim.key).state == UserState.ACTIVE
    assert app.vault.get(victim.key) == victim_refresh
    assert refresh(sandbox, victim_refresh).status_code == 200


def test_revoke_when_google_fails_changes_nothing(app, sandbox):
    query = back(consent(app, sandbox, "flow-8"))
    [user] = app.users.list()
    sandbox.context.faults.add(FaultRule(path="^/revoke$", status=503))
    response = app.post(
        "/api/googlefit/revoke",
        data={"external_system": SYSTEM, "external_id": "flow-8", "revoke_token": query["revoke_token"]},
    )
    assert response.status_code == 502 and response.json() == {"error": "revoke_failed"}
    assert app.vault.get(user.key) and app.users.get(user.key).state == UserState.ACTIVE


def test_a_failed_revoke_redirects_back_with_the_error_and_the_security_headers(app, sandbox):
    query = back(consent(app, sandbox, "flow-11"))
    [user] = app.users.list()
    sandbox.context.faults.add(FaultRule(path="^/revoke$", status=503))
    response = app.post(
        "/api/googlefit/revoke",
        data={
            "external_system": SYSTEM,
            "external_id": "flow-11",
            "revoke_token": query["revoke_token"],
            "redirect_url": APPROVED,
            "state": "s-11",
        },
    )
    assert back(response) == {"error": "revoke_failed", "state": "s-11"}
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert app.users.get(user.key).state == UserState.ACTIVE


def test_a_token_already_revoked_at_google_still_revokes_here(app, sandbox):
    query = back(consent(app, sandbox, "flow-9"))
    [user] = app.users.list()
    httpx2.post(
        sandbox.url + "/revoke", data={"token": app.vault.get(user.key)}
    )  # revoked at Google directly
    response = app.post(
        "/api/googlefit/revoke",
        data={"external_system": SYSTEM, "external_id": "flow-9", "revoke_token": query["revoke_token"]},
    )
    assert response.json() == {"revoked": 1}
    assert app.users.get(user.key).state == UserState.REVOKED


@pytest.mark.parametrize("external_id", ["x' OR '1'='1", "a,b", "*", "p|q", "back\\slash", "$everything"])
def test_a_second_google_account_of_the_same_patient_joins_the_same_patient(app, sandbox, external_id):
    tag = hashlib.sha256(external_id.encode()).hexdigest()[:8]
    back(consent(app, sandbox, external_id, email=f"first-{tag}@example.com"))
    back(consent(app, sandbox, external_id, email=f"second-{tag}@example.com"))
    first, second = app.users.list()
    assert first.google_sub != second.google_sub
    assert first.patient_id == second.patient_id
    assert len(patients_of(sandbox, external_id)) == 1
