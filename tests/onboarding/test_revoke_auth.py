"""POST|GET /api/googlefit/revoke: who may revoke. Anonymous mode needs the revoke_token handed out
on onboarding (the original let anyone who knew external_id/external_system revoke); authenticated
mode needs the caller's bearer JWT. Refusals change nothing. (Revocation at Google: test_flow.py.)"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from fitonfhir_dagster.stores.users import UserState
from onboarding_app.onboard import revoke_token

from .conftest import TEST_STATE_SECRET

APPROVED = "https://app.example.org/fit/revoked"
REVOKE = "/api/googlefit/revoke"
SYSTEM, PATIENT = "urn:example:patients", "p-1"


def _onboarded(app, system=SYSTEM, external_id=PATIENT, sub="1000"):
    """A user row without a stored token (so no call to Google is needed)."""
    return app.users.upsert_onboarded(
        google_sub=sub,
        google_issuer="https://accounts.google.com",
        patient_id="pat-1",
        external_system=system,
        external_id=external_id,
    )


@pytest.fixture
def anonymous(start_app):
    return start_app(FITONFHIR_REDIRECT_URLS=APPROVED)


def _token(system=SYSTEM, external_id=PATIENT):
    return revoke_token(TEST_STATE_SECRET.encode(), system, external_id)


@pytest.mark.parametrize("method", ["post", "get"])
def test_the_revoke_token_revokes_the_identity(anonymous, method):
    user = _onboarded(anonymous)
    other = _onboarded(anonymous, external_id="p-2", sub="2000")
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": _token()}
    if method == "post":
        response = anonymous.post(REVOKE, data=params)
    else:
        response = anonymous.get(REVOKE, params=params)
    assert response.status_code == 200
    assert response.json() == {"revoked": 1}
    revoked = anonymous.users.get(user.key)
    assert (revoked.state, revoked.state_reason) == (UserState.REVOKED, "user_initiated")
    assert revoked.state_changed_at
    assert anonymous.users.get(other.key).state == UserState.ACTIVE


def test_revoking_twice_is_harmless(anonymous):
    _onboarded(anonymous)
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": _token()}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 1}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 0}


def test_an_approved_redirect_url_gets_the_callers_state(anonymous):
    _onboarded(anonymous)
    response = anonymous.post(
        REVOKE,
        data={
            "external_system": SYSTEM,
            "external_id": PATIENT,
            "revoke_token": _token(),
            "redirect_url": APPROVED,
            "state": "s-1",
        },
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/fit/revoked" and parse_qs(location.query) == {"state": ["s-1"]}


@pytest.mark.parametrize(
    ("params", "status", "text"),
    [
        ({}, 400, "The request is missing external_id, external_system, revoke_token."),
        ({"external_system": SYSTEM, "external_id": PATIENT}, 400, "The request is missing revoke_token."),
        (
            {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": "0" * 64},
            403,
            "The revoke_token does not match external_id and external_system.",
        ),
        (
            {"external_system": SYSTEM, "external_id": "p-2", "revoke_token": _token()},
            403,
            "The revoke_token does not match",
        ),
        (
            {
                "external_system": SYSTEM,
                "external_id": PATIENT,
                "revoke_token": _token(),
                "redirect_url": APPROVED + "/",
            },
            400,
            "The redirect URL was not found in the list of approved redirect URLs.",
        ),
    ],
    ids=["nothing", "no-token", "wrong-token", "token-of-another-patient", "redirect-not-approved"],
)
def test_refused_revocations_change_nothing(anonymous, params, status, text):
    user = _onboarded(anonymous)
    response = anonymous.post(REVOKE, data=params)
    assert response.status_code == status
    assert text in response.text
    assert anonymous.users.get(user.key).state == UserState.ACTIVE


def test_authenticated_revoke_uses_the_callers_token(start_app, issuer):
    app = start_app(FITONFHIR_IDENTITY_PROVIDERS=issuer.url, FITONFHIR_AUDIENCE="fitonfhir-test")
    user = _onboarded(app, system=issuer.url, external_id="caller-5")
    assert app.post(REVOKE).status_code == 401
    wrong = issuer.token(sub="caller-6")
    assert app.post(REVOKE, headers={"Authorization": f"Bearer {wrong}"}).json() == {"revoked": 0}
    token = issuer.token(sub="caller-5")
    forbidden = app.post(REVOKE, data={"external_id": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert forbidden.status_code == 400 and "forbidden" in forbidden.text
    assert app.users.get(user.key).state == UserState.ACTIVE
    response = app.post(REVOKE, headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"revoked": 1}
    assert app.users.get(user.key).state == UserState.REVOKED
