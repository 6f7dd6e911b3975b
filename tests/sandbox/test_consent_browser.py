"""A real (headless Chromium) browser can complete the sandbox consent page, both ways."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from playwright.sync_api import Browser, sync_playwright

from fitonfhir_dagster.google_oauth import pkce_pair
from fitonfhir_dagster.settings import DEFAULT_SCOPES, SANDBOX_CLIENT_ID
from fitonfhir_sandbox.handle import running_sandbox

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REDIRECT = "http://127.0.0.1:65534/callback"  # browsers refuse "unsafe" ports such as 9


def _click_through(
    browser: Browser, auth_url: str, params: dict[str, str], button: str
) -> dict[str, list[str]]:
    page = browser.new_page()
    seen: list[str] = []
    # Nothing listens on the callback: answer it at the network layer and keep the URL.
    page.route(REDIRECT + "**", lambda route: (seen.append(route.request.url), route.fulfill(body="ok")))
    page.goto(f"{auth_url}?{urlencode(params)}")
    page.fill("#email", "browser@example.com")
    page.click(button)
    page.wait_for_url(REDIRECT + "**", timeout=10_000)
    page.close()
    assert len(seen) == 1
    return parse_qs(urlsplit(seen[0]).query)


def test_browser_allow_and_deny_redirect_to_the_callback(tmp_path):
    verifier, challenge = pkce_pair()
    params = {
        "client_id": SANDBOX_CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": " ".join(DEFAULT_SCOPES),
        "state": "browser-state",
        "access_type": "offline",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with running_sandbox(tmp_path) as sandbox, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            allowed = _click_through(browser, sandbox.auth_url, params, "#allow")
            denied = _click_through(browser, sandbox.auth_url, params, "#deny")
        finally:
            browser.close()
        assert allowed["state"] == ["browser-state"] and denied["state"] == ["browser-state"]
        assert denied["error"] == ["access_denied"]
        tokens = sandbox.exchange_code(
            allowed["code"][0], redirect_uri=REDIRECT, code_verifier=verifier
        ).json()
        assert tokens["refresh_token"]
        assert tokens["scope"] == " ".join(DEFAULT_SCOPES)
