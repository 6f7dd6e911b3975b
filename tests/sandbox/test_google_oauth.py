"""The sandbox's Google OAuth 2.0 endpoints behave like Google's, over real HTTP."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from fitonfhir_dagster.google_oauth import pkce_pair
from fitonfhir_dagster.settings import DEFAULT_SCOPES, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from fitonfhir_sandbox.handle import DEFAULT_REDIRECT_URI

FIT_ACTIVITY = "https://www.googleapis.com/auth/fitness.activity.read"


@pytest.fixture(autouse=True)
def _reset(sandbox):
    yield
    sandbox.clear_faults()
    sandbox.set_refresh_rotation(False)


def _auth_params(**overrides):
    params = {
        "client_id": SANDBOX_CLIENT_ID,
        "redirect_uri": DEFAULT_REDIRECT_URI,
        "response_type": "code",
        "scope": " ".join(DEFAULT_SCOPES),
        "state": "xyz",
        "access_type": "offline",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def test_consent_page_prefills_login_hint_lists_scopes_and_has_stable_buttons(sandbox):
    page = requests.get(sandbox.auth_url, params=_auth_params(login_hint="pat@example.com"), timeout=5)
    assert page.status_code == 200
    html = page.text
    assert 'id="email" name="email" value="pat@example.com"' in html
    assert '<button type="submit" name="decision" value="allow" id="allow">' in html
    assert '<button type="submit" name="decision" value="deny" id="deny">' in html
    assert 'action="/o/oauth2/v2/auth/decision"' in html
    for scope in DEFAULT_SCOPES:
        assert f"<li>{scope}</li>" in html


def test_consent_page_defaults_the_email_without_login_hint(sandbox):
    page = requests.get(sandbox.auth_url, params=_auth_params(), timeout=5)
    assert 'value="sandbox.user@example.com"' in page.text


def test_happy_path_with_pkce_returns_google_token_response(sandbox):
    verifier, challenge = pkce_pair()
    query = sandbox.consent("happy@example.com", code_challenge=challenge, state="st-1")
    assert query["state"] == "st-1"
    assert query["scope"] == " ".join(DEFAULT_SCOPES)
    assert query["code"].startswith("4/")

    answer = sandbox.exchange_code(query["code"], code_verifier=verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["scope"] == " ".join(DEFAULT_SCOPES)
    assert body["access_token"] and body["refresh_token"] and body["id_token"]


def test_id_token_verifies_against_the_published_jwks(sandbox):
    tokens = sandbox.onboard("jwks@example.com")
    discovery = requests.get(sandbox.url + "/.well-known/openid-configuration", timeout=5).json()
    assert discovery["issuer"] == sandbox.url
    assert discovery["authorization_endpoint"] == sandbox.auth_url
    assert discovery["token_endpoint"] == sandbox.token_url
    assert discovery["revocation_endpoint"] == sandbox.revoke_url
    key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(tokens["id_token"])
    claims = jwt.decode(tokens["id_token"], key.key, algorithms=["RS256"], audience=SANDBOX_CLIENT_ID)
    assert claims["iss"] == sandbox.url
    assert claims["sub"] == sandbox.sub_for_email("jwks@example.com")
    assert claims["email"] == "jwks@example.com"
    assert claims["exp"] > claims["iat"]


def test_sub_is_a_deterministic_21_digit_google_style_id(sandbox):
    sub = sandbox.sub_for_email("Someone@Example.com ")
    assert re.fullmatch(r"1\d{20}", sub)
    assert sub == sandbox.sub_for_email("someone@example.com")
    assert sub != sandbox.sub_for_email("someone.else@example.com")


def test_pkce_mismatch_and_missing_verifier_are_invalid_grant(sandbox):
    _, challenge = pkce_pair()
    wrong_verifier, _ = pkce_pair()
    query = sandbox.consent("pkce@example.com", code_challenge=challenge)
    answer = sandbox.exchange_code(query["code"], code_verifier=wrong_verifier)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": "Invalid code verifier."}

    query = sandbox.consent("pkce@example.com", code_challenge=challenge)
    answer = sandbox.exchange_code(query["code"])
    assert answer.json()["error"] == "invalid_grant"


def test_a_code_is_single_use(sandbox):
    query = sandbox.consent("reuse@example.com")
    assert sandbox.exchange_code(query["code"]).status_code == 200
    again = sandbox.exchange_code(query["code"])
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


def test_a_code_expires_after_ten_minutes(sandbox):
    query = sandbox.consent("slow@example.com")
    sandbox.advance_clock(601)
    assert sandbox.exchange_code(query["code"]).json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_the_authorization_request(sandbox):
    query = sandbox.consent("redir@example.com")
    answer = sandbox.exchange_code(query["code"], redirect_uri="http://localhost:9/callback")
    assert answer.status_code == 400
    assert answer.json()["error"] == "redirect_uri_mismatch"


def test_refresh_returns_a_new_access_token_and_keeps_the_refresh_token(sandbox):
    tokens = sandbox.onboard("refresh@example.com")
    answer = sandbox.refresh(tokens["refresh_token"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["access_token"] != tokens["access_token"]
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    assert sandbox.refresh(tokens["refresh_token"]).status_code == 200


def test_refresh_with_rotation_invalidates_the_old_refresh_token(sandbox):
    tokens = sandbox.onboard("rotate@example.com")
    sandbox.set_refresh_rotation(True)
    rotated = sandbox.refresh(tokens["refresh_token"]).json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert sandbox.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert sandbox.refresh(rotated["refresh_token"]).status_code == 200


def test_revoking_the_access_token_kills_the_whole_grant(sandbox):
    tokens = sandbox.onboard("revoke@example.com")
    answer = requests.post(sandbox.revoke_url, params={"token": tokens["access_token"]}, timeout=5)
    assert answer.status_code == 200
    refreshed = sandbox.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    again = requests.post(sandbox.revoke_url, data={"token": tokens["refresh_token"]}, timeout=5)
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"


def test_revoking_a_user_by_sub_makes_refresh_invalid_grant(sandbox):
    tokens = sandbox.onboard("gone@example.com")
    assert sandbox.revoke_user(sandbox.sub_for_email("gone@example.com")) == 1
    assert sandbox.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_no_refresh_token_on_re_consent_without_prompt_consent(sandbox):
    first = sandbox.onboard("again@example.com", prompt=None)
    assert "refresh_token" in first

    second = sandbox.exchange_code(sandbox.consent("again@example.com")["code"]).json()
    assert "refresh_token" not in second and second["access_token"]

    third = sandbox.exchange_code(sandbox.consent("again@example.com", prompt="consent")["code"]).json()
    assert third["refresh_token"] != first["refresh_token"]
    assert sandbox.refresh(first["refresh_token"]).status_code == 200  # Google keeps older tokens alive


def test_online_access_gets_no_refresh_token(sandbox):
    body = sandbox.exchange_code(sandbox.consent("online@example.com", access_type="online")["code"]).json()
    assert "refresh_token" not in body and body["access_token"]


def test_after_revocation_a_new_consent_gets_a_refresh_token_again(sandbox):
    sandbox.onboard("comeback@example.com")
    sandbox.revoke_user(sandbox.sub_for_email("comeback@example.com"))
    body = sandbox.exchange_code(sandbox.consent("comeback@example.com")["code"]).json()
    assert "refresh_token" in body


def test_deny_redirects_with_access_denied_and_state(sandbox):
    query = sandbox.consent("no@example.com", decision="deny", state="keep-me")
    assert query == {"error": "access_denied", "state": "keep-me"}


def test_no_id_token_without_an_identity_scope(sandbox):
    query = sandbox.consent("noid@example.com", scopes=(FIT_ACTIVITY,))
    body = sandbox.exchange_code(query["code"]).json()
    assert "id_token" not in body and body["scope"] == FIT_ACTIVITY


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_id": None}, "invalid_request"),
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"redirect_uri": None}, "invalid_request"),
        ({"redirect_uri": "https://127.0.0.1:8080/callback"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://evil.example.com/callback"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://127.0.0.1.evil.com/callback"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://user@127.0.0.1:8080/callback"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://127.0.0.1:8080/other"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://127.0.0.1:8080/callback?next=x"}, "redirect_uri_mismatch"),
        ({"redirect_uri": "http://127.0.0.1:99999/callback"}, "redirect_uri_mismatch"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": None}, "invalid_request"),
        ({"scope": "https://www.googleapis.com/auth/drive"}, "invalid_scope"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge": "a" * 43, "code_challenge_method": "S512"}, "invalid_request"),
        ({"access_type": "forever"}, "invalid_request"),
    ],
)
def test_bad_authorization_requests_get_an_error_page_never_a_redirect(sandbox, overrides, error):
    page = requests.get(sandbox.auth_url, params=_auth_params(**overrides), allow_redirects=False, timeout=5)
    assert page.status_code == 400
    assert "location" not in page.headers
    assert f"Error 400: {error}" in page.text


def test_registered_loopback_callbacks_are_accepted(sandbox):
    for uri in ("http://localhost:8080/api/googlefit/callback", "http://127.0.0.1/callback"):
        assert (
            requests.get(sandbox.auth_url, params=_auth_params(redirect_uri=uri), timeout=5).status_code
            == 200
        )


def test_tampered_hidden_fields_are_rechecked_on_decision(sandbox):
    fields = _auth_params(redirect_uri="http://evil.example.com/callback") | {"email": "a@example.com"}
    answer = requests.post(
        sandbox.url + "/o/oauth2/v2/auth/decision", data=fields | {"decision": "allow"}, allow_redirects=False
    )
    assert answer.status_code == 400 and "redirect_uri_mismatch" in answer.text


def test_an_invalid_email_re_shows_the_consent_page_with_a_message(sandbox):
    fields = _auth_params() | {"email": "not-an-email", "decision": "allow"}
    answer = requests.post(sandbox.url + "/o/oauth2/v2/auth/decision", data=fields, allow_redirects=False)
    assert answer.status_code == 400
    assert "not a valid e-mail address: &#x27;not-an-email&#x27;" in answer.text


def test_client_authentication_via_http_basic(sandbox):
    query = sandbox.consent("basic@example.com")
    credentials = base64.b64encode(f"{SANDBOX_CLIENT_ID}:{SANDBOX_CLIENT_SECRET}".encode()).decode()
    answer = requests.post(
        sandbox.token_url,
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": DEFAULT_REDIRECT_URI,
        },
        headers={"Authorization": f"Basic {credentials}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "x"}, 400, "invalid_request"),  # no client id
        ({"client_id": "nobody", "client_secret": "x", "grant_type": "refresh_token"}, 401, "invalid_client"),
        (
            {"client_id": SANDBOX_CLIENT_ID, "client_secret": "wrong", "grant_type": "refresh_token"},
            401,
            "invalid_client",
        ),
        ({"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}, 400, "invalid_request"),
        (
            {
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "password",
            },
            400,
            "unsupported_grant_type",
        ),
        (
            {
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "refresh_token",
            },
            400,
            "invalid_request",
        ),
        (
            {
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "authorization_code",
                "redirect_uri": DEFAULT_REDIRECT_URI,
            },
            400,
            "invalid_request",
        ),
        (
            {
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "refresh_token",
                "refresh_token": "1//made-up",
            },
            400,
            "invalid_grant",
        ),
    ],
)
def test_token_endpoint_errors_look_like_googles(sandbox, data, status, error):
    answer = requests.post(sandbox.token_url, data=data, timeout=5)
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]


def test_revoke_without_a_token_is_invalid_request(sandbox):
    answer = requests.post(sandbox.revoke_url, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


def test_prompt_none_redirects_with_interaction_required(sandbox):
    page = requests.get(
        sandbox.auth_url, params=_auth_params(prompt="none"), allow_redirects=False, timeout=5
    )
    assert page.status_code == 302
    query = parse_qs(urlsplit(page.headers["location"]).query)
    assert query["error"] == ["interaction_required"] and query["state"] == ["xyz"]


def test_userinfo_answers_for_a_live_access_token(sandbox):
    tokens = sandbox.onboard("me@example.com")
    info = requests.get(
        sandbox.url + "/oauth2/v3/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=5,
    ).json()
    assert info["sub"] == sandbox.sub_for_email("me@example.com") and info["email"] == "me@example.com"
