"""With every relevant logger at DEBUG (ours, uvicorn incl. its access log, httpx2/httpcore2, requests,
urllib3), a full onboarding, failures and a revocation never log a token, code or secret."""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlsplit

import pytest

from fitonfhir_sandbox.faults import FaultRule

from .conftest import TEST_STATE_SECRET, start_with_sandbox
from .test_flow import APPROVED, SYSTEM, back

LOGGERS = (
    "",
    "onboarding_app",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx2",
    "httpcore2",
    "requests",
    "urllib3",
    "fitonfhir",
)


@pytest.fixture
def all_logs(caplog):
    """Attach caplog's handler to every logger directly (uvicorn.access may not propagate)."""
    caplog.set_level(logging.DEBUG)
    attached = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        previous = logger.level
        logger.setLevel(logging.DEBUG)
        if name and caplog.handler not in logger.handlers:
            logger.addHandler(caplog.handler)
            attached.append(logger)
        attached.append((logger, previous))
    yield caplog
    for item in attached:
        if isinstance(item, tuple):
            item[0].setLevel(item[1])
        else:
            item.removeHandler(caplog.handler)


def test_no_secret_reaches_the_logs(all_logs, start_app, sandbox):
    sandbox.context.faults.clear()
    app = start_with_sandbox(start_app, sandbox, FITONFHIR_REDIRECT_URLS=APPROVED)
    secrets = {TEST_STATE_SECRET, app.settings.google_client_secret}

    params = {
        "external_id": "log-1",
        "external_system": SYSTEM,
        "redirect_url": APPROVED,
        "state": "caller-1",
    }
    auth_url = app.get("/api/googlefit/authorize", params=params).json()["authUrl"]
    fields = dict(parse_qsl(urlsplit(auth_url).query))
    secrets |= {fields["state"]}
    answer = app.client.post(
        sandbox.url + "/o/oauth2/v2/auth/decision",
        data={**fields, "decision": "allow", "email": "log@example.com"},
    )
    callback = answer.headers["location"]
    code = dict(parse_qsl(urlsplit(callback).query))["code"]
    secrets.add(code)
    query = back(app.get(callback[len(app.url) :]))
    secrets.add(query["revoke_token"])
    [user] = app.users.list()
    secrets.add(app.vault.get(user.key))
    # a replay and a failing exchange log their reasons, still without the values
    assert app.get(callback[len(app.url) :]).status_code == 400
    auth_url = app.get("/api/googlefit/authorize", params=params).json()["authUrl"]
    fields = dict(parse_qsl(urlsplit(auth_url).query))
    secrets.add(fields["state"])
    answer = app.client.post(
        sandbox.url + "/o/oauth2/v2/auth/decision",
        data={**fields, "decision": "allow", "email": "log@example.com"},
    )
    sandbox.context.faults.add(FaultRule(path="^/token$", method="POST", status=400, error=None))
    failing = answer.headers["location"]
    secrets.add(dict(parse_qsl(urlsplit(failing).query))["code"])
    assert back(app.get(failing[len(app.url) :]))["error"] == "token_exchange_failed"
    revoked = app.post(
        "/api/googlefit/revoke",
        data={"external_system": SYSTEM, "external_id": "log-1", "revoke_token": query["revoke_token"]},
    )
    assert revoked.json() == {"revoked": 1}

    # The test itself plays the browser: its own httpx client (main thread) logs the URLs it follows,
    # as a browser's history would hold them. Everything the servers log happens in their threads.
    records = [r for r in all_logs.records if r.thread != threading.get_ident()]
    assert any(r.name == "uvicorn.access" for r in records), "the access log was captured"
    assert any(r.name.startswith("onboarding_app") for r in records)
    text = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {all_logs.handler.formatter.formatException(r.exc_info) if r.exc_info else ''}"
        for r in records
    )
    for secret in secrets:
        assert secret and len(secret) >= 8
        assert secret not in text, f"a secret value leaked into the logs ({len(secret)} chars)"
