"""A real browser (headless Debian chromium) goes through onboarding: landing page -> Connect ->
sandbox consent page -> Allow (or Deny) -> back on the redirect URL with the caller's state."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, sync_playwright

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.stores.users import UserState

from .conftest import start_with_sandbox

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield found
        found.close()


def _connect(browser, app, external_id, email):
    """Open the landing page, submit Connect; returns the page on the sandbox consent screen and the
    state the landing form sent."""
    page = browser.new_page()
    page.goto(app.url + "/")
    page.fill("#external_id", external_id)
    caller_state = page.get_attribute("input[name=state]", "value")
    page.click("#connect")
    page.wait_for_selector("#allow")
    assert page.url.startswith(app.settings.google_auth_uri)
    page.fill("#email", email)
    return page, caller_state


def _query(page):
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def test_allow_onboards_the_patient(browser, start_app, sandbox):
    app = start_with_sandbox(start_app, sandbox)
    page, caller_state = _connect(browser, app, "browser-1", "browser.allow@example.com")
    page.click("#allow")
    page.wait_for_url(app.url + "/done?**")
    assert page.text_content("#result") == "Connected"
    query = _query(page)
    assert query["state"] == caller_state and "error" not in query
    page.close()

    [user] = app.users.list()
    assert user.state == UserState.ACTIVE and user.external_id == "browser-1"
    assert user.google_sub == sandbox.sub_for_email("browser.allow@example.com")
    patient = FhirClient(sandbox.fhir_url).read("Patient", user.patient_id)
    assert {"system": "urn:fitonfhir:demo", "value": "browser-1"} in patient["identifier"]
    assert app.vault.get(user.key)


def test_deny_goes_back_with_an_error_and_writes_nothing(browser, start_app, sandbox):
    app = start_with_sandbox(start_app, sandbox)
    before = len(
        FhirClient(sandbox.fhir_url).search("Patient", {"identifier": "urn:fitonfhir:demo|browser-2"})
    )
    page, caller_state = _connect(browser, app, "browser-2", "browser.deny@example.com")
    page.click("#deny")
    page.wait_for_url(app.url + "/done?**")
    assert _query(page) == {"error": "access_denied", "state": caller_state}
    assert page.get_attribute("#error", "data-error") == "access_denied"
    page.close()

    assert app.users.list() == []
    assert not list((app.settings.home / "vault").glob("*.token"))
    after = FhirClient(sandbox.fhir_url).search("Patient", {"identifier": "urn:fitonfhir:demo|browser-2"})
    assert len(after) == before == 0
