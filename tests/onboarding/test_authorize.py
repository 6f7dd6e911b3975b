"""GET /api/googlefit/authorize: the original parameters and 400 messages, a PKCE consent URL with
a signed state, JSON for API callers and a 302 for browsers. Refusals write nothing."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from onboarding_app.oauth_state import StateStore

APPROVED = "https://app.example.org/fit/done"
AUTHORIZE = "/api/googlefit/authorize"
ANON = {"external_id": "patient-1", "external_system": "urn:example:patients", "redirect_url": APPROVED}


@pytest.fixture(scope="module")
def anonymous(module_start_app):
    return module_start_app(FITONFHIR_REDIRECT_URLS=f"{APPROVED}, https://second.example.org/cb")


@pytest.fixture(scope="module")
def authenticated(module_start_app, module_issuer):
    app = module_start_app(
        FITONFHIR_REDIRECT_URLS=APPROVED,
        FITONFHIR_IDENTITY_PROVIDERS=module_issuer.url,
        FITONFHIR_AUDIENCE="fitonfhir-test",
    )
    app.issuer = module_issuer
    return app


def _nothing_written(app):
    assert app.users.list() == []
    assert not list((app.settings.home / "vault").glob("*.token"))


def test_anonymous_authorize_returns_a_consent_url(anonymous):
    before = datetime.now(UTC)
    response = anonymous.get(AUTHORIZE, params={**ANON, "state": "caller-1"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"authUrl", "expiresAt"}
    expires = datetime.fromisoformat(body["expiresAt"])
    assert before + timedelta(minutes=4, seconds=59) <= expires <= datetime.now(UTC) + timedelta(minutes=5)
    url = urlsplit(body["authUrl"])
    settings = anonymous.settings
    assert f"{url.scheme}://{url.netloc}{url.path}" == settings.google_auth_uri
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == settings.google_client_id
    assert query["redirect_uri"] == f"{anonymous.url}/api/googlefit/callback"
    assert query["response_type"] == "code"
    assert query["scope"] == " ".join(settings.google_scopes)
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert query["include_granted_scopes"] == "true"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert "caller-1" not in query["state"] and "patient-1" not in query["state"]
    # the state is ours and usable once; it carries the caller's data server-side
    store = StateStore(settings.home / "onboarding" / "state.sqlite3", settings.state_secret.encode())
    pending = store.consume(query["state"])
    assert (pending.external_id, pending.external_system, pending.redirect_url, pending.caller_state) == (
        "patient-1",
        "urn:example:patients",
        APPROVED,
        "caller-1",
    )
    challenge = base64.urlsafe_b64encode(hashlib.sha256(pending.code_verifier.encode()).digest()).rstrip(b"=")
    assert query["code_challenge"] == challenge.decode()
    _nothing_written(anonymous)


def test_a_browser_is_redirected_straight_to_google(anonymous):
    response = anonymous.get(AUTHORIZE, params=ANON, headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 302
    assert response.headers["location"].startswith(anonymous.settings.google_auth_uri + "?")
    assert response.headers["referrer-policy"] == "no-referrer"


def test_an_api_caller_accepting_anything_gets_json(anonymous):
    response = anonymous.get(AUTHORIZE, params=ANON, headers={"Accept": "application/json, text/html"})
    assert response.status_code == 200 and "authUrl" in response.json()


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        (("external_id",), "external_id"),
        (("external_system",), "external_system"),
        (("redirect_url",), "redirect_url"),
        (("external_id", "external_system", "redirect_url"), "external_id, external_system, redirect_url"),
        (("external_id", "redirect_url"), "external_id, redirect_url"),
    ],
)
def test_anonymous_mode_names_every_missing_parameter(anonymous, drop, missing):
    params = {k: v for k, v in ANON.items() if k not in drop}
    response = anonymous.get(AUTHORIZE, params=params)
    assert response.status_code == 400
    assert response.text == (
        "external_id, external_system, redirect_url are required query parameters with anonymous "
        f"authorization. The request is missing {missing}."
    )
    _nothing_written(anonymous)


@pytest.mark.parametrize(
    "redirect",
    [
        APPROVED + "/",
        APPROVED.upper(),
        "https://app.example.org/fit/done.evil.example",
        APPROVED + "?next=https://evil.example",
        "https://app.example.org/fit",
        "https://evil.example/fit/done",
    ],
)
def test_a_redirect_url_not_on_the_allow_list_is_refused(anonymous, redirect):
    response = anonymous.get(AUTHORIZE, params={**ANON, "redirect_url": redirect})
    assert response.status_code == 400
    assert response.text == "The redirect URL was not found in the list of approved redirect URLs."
    _nothing_written(anonymous)


def test_the_apps_own_done_page_is_always_approved(anonymous):
    response = anonymous.get(AUTHORIZE, params={**ANON, "redirect_url": anonymous.url + "/done"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("external_id", "x" * 257, "external_id must be at most 256 characters, got 257."),
        ("external_id", "a\x00b", "external_id contains whitespace or control characters"),
        ("external_system", "urn:a b", "external_system contains whitespace or control characters"),
        ("external_system", "urn:a|b", "external_system must be a URI and cannot contain '|'."),
        ("external_id", "   ", "external_id"),
        ("state", "s" * 1025, "state must be at most 1024 characters, got 1025."),
    ],
)
def test_unusable_values_are_refused_with_their_name(anonymous, name, value, message):
    response = anonymous.get(AUTHORIZE, params={**ANON, name: value})
    assert response.status_code == 400
    assert message in response.text


def test_authenticated_authorize_takes_the_patient_from_the_token(authenticated):
    token = authenticated.issuer.token(sub="caller-77")
    response = authenticated.get(
        AUTHORIZE,
        params={"redirect_url": APPROVED, "state": "s"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    state = parse_qs(urlsplit(response.json()["authUrl"]).query)["state"][0]
    settings = authenticated.settings
    pending = StateStore(
        settings.home / "onboarding" / "state.sqlite3", settings.state_secret.encode()
    ).consume(state)
    assert (pending.external_system, pending.external_id) == (authenticated.issuer.url, "caller-77")
    assert pending.anonymous is False


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"],
)
def test_authenticated_mode_without_a_valid_token_is_401(authenticated, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = authenticated.get(AUTHORIZE, params={"redirect_url": APPROVED}, headers=headers)
    assert response.status_code == 401
    assert response.text == ""
    _nothing_written(authenticated)


@pytest.mark.parametrize(
    "claims",
    [{"iss": "https://evil.example"}, {"audience": "other-app"}, {"exp": 1000}],
    ids=["wrong-issuer", "wrong-audience", "expired"],
)
def test_authenticated_mode_refuses_bad_tokens(authenticated, claims):
    token = authenticated.issuer.token(**claims)
    response = authenticated.get(
        AUTHORIZE, params={"redirect_url": APPROVED}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("params", "contains"),
    [
        ({"external_id": "x"}, "external_id"),
        ({"external_system": "x"}, "external_system"),
        ({"external_id": "x", "external_system": "y"}, "external_id, external_system"),
    ],
)
def test_authenticated_mode_forbids_external_identifiers(authenticated, params, contains):
    token = authenticated.issuer.token()
    response = authenticated.get(
        AUTHORIZE, params={**params, "redirect_url": APPROVED}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400
    assert response.text == (
        "external_id and external_system are forbidden query parameters with authenticated authorization. "
        f"The request contains {contains}."
    )


def test_authenticated_mode_requires_a_redirect_url(authenticated):
    token = authenticated.issuer.token()
    response = authenticated.get(AUTHORIZE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.text == "The required parameter redirect_url was not provided in the request."


def test_only_get_is_bound(anonymous):
    assert anonymous.post(AUTHORIZE, params=ANON).status_code == 405


@pytest.mark.parametrize("path", ["/api/googlefit/authorize/", "/api/googlefit/other", "/api/googlefit"])
def test_unknown_paths_are_404(anonymous, path):
    assert anonymous.get(path, params=ANON).status_code == 404


def test_health_and_pages(anonymous):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    landing = anonymous.get("/")
    assert landing.status_code == 200 and 'id="connect"' in landing.text
    assert f'value="{anonymous.url}/done"' in landing.text
    done = anonymous.get("/done", params={"state": "<script>x</script>"})
    assert "<script>x" not in done.text and "&lt;script&gt;" in done.text
    error = anonymous.get("/error", params={"error": "<b>x</b>"})
    assert "<b>x" not in error.text
