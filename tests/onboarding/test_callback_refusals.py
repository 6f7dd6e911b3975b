"""GET /api/googlefit/callback before any token exchange: an untrustworthy state gets an HTML 400
page; a trustworthy one sends the browser back to the approved redirect URL with ``error=`` and the
caller's state (the original answered a bare 500). None of these write anything."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from onboarding_app.oauth_state import PendingAuthorization, StateStore

APPROVED = "https://app.example.org/fit/done?tenant=7"
CALLBACK = "/api/googlefit/callback"


@pytest.fixture(scope="module")
def app(module_start_app):
    return module_start_app(FITONFHIR_REDIRECT_URLS=APPROVED)


def _state(app, caller_state="caller-9"):
    response = app.get(
        "/api/googlefit/authorize",
        params={
            "external_id": "p-1",
            "external_system": "urn:example:patients",
            "redirect_url": APPROVED,
            "state": caller_state,
        },
    )
    assert response.status_code == 200
    return parse_qs(urlsplit(response.json()["authUrl"]).query)["state"][0]


def _back(response):
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://app.example.org/fit/done"
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def _nothing_written(app):
    assert app.users.list() == []
    assert not list((app.settings.home / "vault").glob("*.token"))


def test_user_denial_goes_back_with_access_denied_and_the_callers_state(app):
    state = _state(app)
    query = _back(app.get(CALLBACK, params={"error": "access_denied", "state": state}))
    assert query == {"tenant": "7", "error": "access_denied", "state": "caller-9"}
    _nothing_written(app)


def test_other_google_errors_are_not_reflected_verbatim(app):
    state = _state(app)
    query = _back(app.get(CALLBACK, params={"error": "<script>alert(1)</script>", "state": state}))
    assert query["error"] == "authorization_failed"


def test_a_missing_code_goes_back_with_an_error(app):
    query = _back(app.get(CALLBACK, params={"state": _state(app)}))
    assert query == {"tenant": "7", "error": "missing_code", "state": "caller-9"}
    _nothing_written(app)


def test_no_caller_state_means_no_state_parameter(app):
    query = _back(app.get(CALLBACK, params={"state": _state(app, caller_state="")}))
    assert "state" not in query


@pytest.mark.parametrize(
    ("state", "reason"),
    [(None, "missing_state"), ("forged.state", "invalid_state"), ("abc", "invalid_state")],
)
def test_an_untrustworthy_state_gets_an_html_error_page(app, state, reason):
    params = {"code": "4/abc"} | ({"state": state} if state else {})
    response = app.get(CALLBACK, params=params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-error="{reason}"' in response.text
    assert "location" not in response.headers
    _nothing_written(app)


def test_a_replayed_state_is_refused(app):
    state = _state(app)
    _back(app.get(CALLBACK, params={"error": "access_denied", "state": state}))
    replay = app.get(CALLBACK, params={"code": "4/abc", "state": state})
    assert replay.status_code == 400
    assert 'data-error="used_state"' in replay.text
    _nothing_written(app)


def test_an_expired_state_is_refused(app):
    from datetime import UTC, datetime, timedelta

    settings = app.settings
    store = StateStore(settings.home / "onboarding" / "state.sqlite3", settings.state_secret.encode())
    pending = PendingAuthorization("urn:x", "p", APPROVED, "s", "v" * 64, True)
    token, _ = store.issue(pending, now=datetime.now(UTC) - timedelta(minutes=6))
    response = app.get(CALLBACK, params={"code": "4/abc", "state": token})
    assert response.status_code == 400
    assert 'data-error="expired_state"' in response.text
    assert "5 minute" in response.text
    _nothing_written(app)


def test_a_state_whose_redirect_is_no_longer_approved_is_refused(app):
    settings = app.settings
    store = StateStore(settings.home / "onboarding" / "state.sqlite3", settings.state_secret.encode())
    token, _ = store.issue(
        PendingAuthorization("urn:x", "p", "https://removed.example/cb", None, "v" * 64, True)
    )
    response = app.get(CALLBACK, params={"code": "4/abc", "state": token})
    assert response.status_code == 400
    assert 'data-error="redirect_not_allowed"' in response.text
