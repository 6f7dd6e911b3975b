"""POST|GET /api/googlefit/revoke: who may revoke. Anonymous mode needs the revoke_token handed out
on onboarding (the original let anyone who knew external_id/external_system revoke); that token names
the one account it was issued for, so onboarding another Google account under the same identity gives
no power over the first. Authenticated mode needs the caller's bearer JWT. Refusals change nothing.
(Revocation at Google: test_flow.py.)"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from urllib.parse import parse_qs, urlsplit

import pytest

from fitonfhir_dagster.stores.users import UserState
from onboarding_app.app import MAX_FORM_BYTES, MSG_BODY_TOO_LARGE
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


def _token(user_key, system=SYSTEM, external_id=PATIENT):
    return revoke_token(TEST_STATE_SECRET.encode(), system, external_id, user_key)


@pytest.mark.parametrize("method", ["post", "get"])
def test_the_revoke_token_revokes_the_identity(anonymous, method):
    user = _onboarded(anonymous)
    other = _onboarded(anonymous, external_id="p-2", sub="2000")
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": _token(user.key)}
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
    user = _onboarded(anonymous)
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": _token(user.key)}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 1}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 0}


def test_an_approved_redirect_url_gets_the_callers_state(anonymous):
    user = _onboarded(anonymous)
    response = anonymous.post(
        REVOKE,
        data={
            "external_system": SYSTEM,
            "external_id": PATIENT,
            "revoke_token": _token(user.key),
            "redirect_url": APPROVED,
            "state": "s-1",
        },
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/fit/revoked" and parse_qs(location.query) == {"state": ["s-1"]}


def _identity_only_token():
    """The earlier scheme: an HMAC of the identity alone, valid for every account linked to it."""
    message = b"fitonfhir-revoke:" + json.dumps([SYSTEM, PATIENT]).encode()
    return hmac.new(TEST_STATE_SECRET.encode(), message, hashlib.sha256).hexdigest()


OWN_TOKEN = object()  # stands for the revoke token issued to the test's user


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
            {"external_system": SYSTEM, "external_id": "p-2", "revoke_token": OWN_TOKEN},
            403,
            "The revoke_token does not match",
        ),
        (
            {
                "external_system": SYSTEM,
                "external_id": PATIENT,
                "revoke_token": OWN_TOKEN,
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
    params = {k: _token(user.key) if v is OWN_TOKEN else v for k, v in params.items()}
    response = anonymous.post(REVOKE, data=params)
    assert response.status_code == status
    assert text in response.text
    assert anonymous.users.get(user.key).state == UserState.ACTIVE


def test_a_token_revokes_only_the_account_it_was_issued_for(anonymous):
    """Anyone can onboard their own Google account under a victim's identity (anonymous authorize is
    unauthenticated) and receive a revoke token; it must not reach the victim's account."""
    victim = _onboarded(anonymous, sub="1000")
    intruder = _onboarded(anonymous, sub="2000")  # same external identity, another Google account
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": _token(intruder.key)}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 1}
    assert anonymous.users.get(intruder.key).state == UserState.REVOKED
    assert anonymous.users.get(victim.key).state == UserState.ACTIVE


@pytest.mark.parametrize(
    "forge",
    [
        lambda victim, intruder: _identity_only_token(),
        lambda victim, intruder: victim.key + "." + _token(intruder.key).partition(".")[2],
        lambda victim, intruder: victim.key,
        lambda victim, intruder: victim.key + ".",
        lambda victim, intruder: "../" + _token(victim.key),
    ],
    ids=["identity-only-mac", "own-mac-under-the-victims-key", "key-alone", "key-and-dot", "garbage-key"],
)
def test_forged_tokens_naming_another_account_are_refused(anonymous, forge):
    victim = _onboarded(anonymous, sub="1000")
    intruder = _onboarded(anonymous, sub="2000")
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": forge(victim, intruder)}
    response = anonymous.post(REVOKE, data=params)
    assert response.status_code == 403 and "The revoke_token does not match" in response.text
    assert {u.state for u in anonymous.users.list()} == {UserState.ACTIVE}


def test_a_token_stops_working_once_its_account_is_linked_to_another_identity(anonymous):
    user = _onboarded(anonymous)
    token = _token(user.key)
    _onboarded(anonymous, external_id="p-9")  # the same Google account re-onboarded for another patient
    params = {"external_system": SYSTEM, "external_id": PATIENT, "revoke_token": token}
    assert anonymous.post(REVOKE, data=params).json() == {"revoked": 0}
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


def _raw_post(app, head: str, chunks=()):
    """Send a revoke POST over a raw socket and never finish the body: a server that waits for the whole
    body before checking its size never answers (the socket times out)."""
    host, port = urlsplit(app.url).hostname, urlsplit(app.url).port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            f"POST {REVOKE} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n{head}\r\n".encode()
        )
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(MSG_BODY_TOO_LARGE.encode()):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer.decode()


def test_an_announced_oversize_body_is_refused_before_it_is_sent(anonymous):
    answer = _raw_post(anonymous, f"Content-Length: {100 * MAX_FORM_BYTES}\r\n")
    assert answer.startswith("HTTP/1.1 413 ")
    assert MSG_BODY_TOO_LARGE in answer


def test_a_streamed_oversize_body_is_refused_once_the_limit_is_passed(anonymous):
    """Chunked, no Content-Length: the server stops at MAX_FORM_BYTES; the final chunk is never sent."""
    user = _onboarded(anonymous)
    piece = b"x" * 4096
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(MAX_FORM_BYTES // len(piece) + 1)]
    answer = _raw_post(anonymous, "Transfer-Encoding: chunked\r\n", chunks)
    assert answer.startswith("HTTP/1.1 413 ")
    assert MSG_BODY_TOO_LARGE in answer
    assert anonymous.users.get(user.key).state == UserState.ACTIVE


def test_a_content_length_that_is_not_a_number_is_refused(anonymous):
    # h11 refuses a malformed Content-Length itself, before the app; either way it is a 400
    answer = _raw_post(anonymous, "Content-Length: twelve\r\n")
    assert answer.startswith("HTTP/1.1 400 ")
