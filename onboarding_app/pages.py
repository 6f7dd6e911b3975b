"""The few HTML pages patients see: landing (Connect), done, error. Every value is HTML-escaped."""

from __future__ import annotations

import secrets
from html import escape
from importlib.resources import files
from string import Template

from starlette.responses import HTMLResponse

# Short error codes sent back with ``error=`` and what they mean to a patient.
ERROR_TEXT = {
    "access_denied": "You did not allow access to your Google Fit data. Nothing was stored.",
    "authorization_failed": "Google could not complete the authorization.",
    "missing_code": "Google did not return an authorization code.",
    "missing_state": "The link is incomplete: it has no state parameter.",
    "invalid_state": "This link was not issued by this service.",
    "used_state": "This authorization was already completed or is unknown. Please start again.",
    "expired_state": "The authorization was not completed within 5 minutes. Please start again.",
    "redirect_not_allowed": "The page to return to is no longer approved.",
    "token_exchange_failed": "Exchanging the authorization code with Google failed.",
    "no_refresh_token": "Google did not grant offline access.",
    "no_id_token": "Google did not return your account identity.",
    "invalid_id_token": "Google's identity token could not be verified.",
    "fhir_error": "Your patient record could not be created or updated.",
    "vault_error": "Your authorization could not be stored.",
    "users_error": "Your registration could not be stored.",
    "revoke_failed": "Google could not revoke access right now.",
    "server_error": "An unexpected error occurred.",
}


def _template(name: str) -> Template:
    return Template(files("onboarding_app").joinpath("templates", name).read_text(encoding="utf-8"))


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    html = _template("base.html").substitute(title=escape(title), body=body)
    return HTMLResponse(html, status_code=status_code)


def landing_page(*, anonymous: bool, authorize_path: str, redirect_url: str) -> HTMLResponse:
    if not anonymous:
        body = _template("landing_authenticated.html").substitute()
        return _page("Connect Google Fit", body)
    body = _template("landing.html").substitute(
        authorize_path=escape(authorize_path),
        redirect_url=escape(redirect_url),
        state=escape(secrets.token_urlsafe(12)),
    )
    return _page("Connect Google Fit", body)


def done_page(state: str | None) -> HTMLResponse:
    extra = f'<p class="small">Reference: <code id="state">{escape(state)}</code></p>' if state else ""
    body = (
        '<h1 id="result">Connected</h1>'
        "<p>Your Google Fit data will now be imported into your health record.</p>" + extra
    )
    return _page("Connected", body)


def error_page(reason: str, status_code: int = 200, detail: str = "") -> HTMLResponse:
    text = ERROR_TEXT.get(reason, "Something went wrong.")
    code = reason if reason in ERROR_TEXT else "unknown"
    body = (
        f'<h1 id="result">Not connected</h1><p id="error" data-error="{escape(code)}">{escape(text)}</p>'
        + (f'<p class="small">{escape(detail)}</p>' if detail else "")
    )
    return _page("Not connected", body, status_code)
