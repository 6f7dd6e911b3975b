"""Onboard sandbox users the way a patient does: onboarding app -> sandbox consent (Allow) -> callback.

Used by ``fitonfhir users add-sandbox`` and ``fitonfhir demo``. Everything goes over real HTTP, so the
same code paths (signed state, PKCE, code exchange, Patient, vault, users row) run as for a real user.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from .consent_form import ConsentForm

SANDBOX_SYSTEM = "urn:fitonfhir:sandbox-patient"


class SandboxOnboardingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Onboarded:
    email: str
    external_id: str
    redirect: str  # where the browser ended up (the caller's redirect URL with state)


def sandbox_email(index: int, prefix: str = "demo-user") -> str:
    return f"{prefix}-{index}@example.com"


def onboard_sandbox_user(
    onboarding_url: str, index: int, timeout: float = 30, email: str | None = None
) -> Onboarded:
    """Walk one sandbox account through consent; raises with the app's ``error=`` reason on failure."""
    external_id = f"sandbox-{email.split('@', 1)[0]}" if email else f"sandbox-{index}"
    email = email or sandbox_email(index)
    http = requests.Session()
    done = onboarding_url + "/done"
    answer = http.get(
        onboarding_url + "/api/googlefit/authorize",
        params={
            "external_id": external_id,
            "external_system": SANDBOX_SYSTEM,
            "redirect_url": done,
            "state": external_id,
        },
        headers={"Accept": "application/json"},
        timeout=timeout,
    )
    if answer.status_code != 200:
        raise SandboxOnboardingError(f"authorize refused ({answer.status_code}): {answer.text[:200]}")
    auth_url = answer.json()["authUrl"]
    page = http.get(auth_url, timeout=timeout)
    form = ConsentForm(page.text)
    if page.status_code != 200 or not form.action:
        raise SandboxOnboardingError(f"no consent page at the authorization URL (HTTP {page.status_code})")
    decision = http.post(
        urljoin(auth_url, form.action),
        data={**form.fields, "email": email, "decision": "allow"},
        allow_redirects=False,
        timeout=timeout,
    )
    callback = decision.headers.get("location", "")
    if decision.status_code != 302 or not callback.startswith(onboarding_url):
        raise SandboxOnboardingError(
            f"consent did not redirect to the onboarding callback (HTTP {decision.status_code})"
        )
    final = http.get(callback, allow_redirects=False, timeout=timeout)
    location = final.headers.get("location", "")
    query = parse_qs(urlsplit(location).query)
    if final.status_code != 302 or "error" in query:
        reason = query.get("error", [f"HTTP {final.status_code}"])[0]
        raise SandboxOnboardingError(f"onboarding of {email} failed: {reason}")
    return Onboarded(email, external_id, location)
