"""Run the sandbox inside a test: a real uvicorn server on a free loopback port, in a thread.

    with running_sandbox(tmp_path) as sandbox:
        tokens = sandbox.onboard("alice@example.com")          # consent + code exchange over HTTP
        sandbox.add_fault(path="/datasets/", status=429, retry_after=1)
        ...

The handle also drives the consent form for tests of an onboarding app (:meth:`SandboxHandle.consent`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import requests
import uvicorn

from fitonfhir_dagster.google_oauth import pkce_pair
from fitonfhir_dagster.settings import DEFAULT_SCOPES, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from fitonfhir_sandbox import accounts
from fitonfhir_sandbox.consent_form import ConsentForm
from fitonfhir_sandbox.context import ClientSpec, GoogleSandbox
from fitonfhir_sandbox.faults import FaultRule
from fitonfhir_sandbox.oauth_routes import AUTH_PATH, DECISION_PATH, REVOKE_PATH, TOKEN_PATH
from fitonfhir_sandbox.sandbox_app import create_sandbox_app
from onboarding_app.serving import bind_socket, run_in_thread, socket_url

DEFAULT_REDIRECT_URI = "http://127.0.0.1:65535/callback"  # allowed by the loopback policy; never contacted


@dataclass
class SandboxHandle:
    url: str
    home: Path
    context: GoogleSandbox
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET

    @property
    def fhir_url(self) -> str:
        return self.url + "/fhir"

    @property
    def fit_url(self) -> str:
        return self.url + "/fitness/v1/"

    @property
    def auth_url(self) -> str:
        return self.url + AUTH_PATH

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def revoke_url(self) -> str:
        return self.url + REVOKE_PATH

    def env(self) -> dict[str, str]:
        """``FITONFHIR_*`` variables pointing every Google/FHIR URL at this sandbox."""
        return {"FITONFHIR_SANDBOX_URL": self.url}

    # --- faults and control

    def add_fault(self, rule: FaultRule | None = None, /, **spec: Any) -> FaultRule:
        """Add a fault (see ``faults.FaultRule``), e.g. ``add_fault(path="/datasets/", status=503, count=2)``."""
        return self.context.faults.add(rule if rule is not None else FaultRule(**spec))

    def clear_faults(self) -> None:
        self.context.faults.clear()

    def revoke_user(self, sub: str) -> int:
        """The user removes the app in their Google account: every grant (and token) of ``sub`` dies."""
        return self.context.state.revoke_sub(sub)

    @staticmethod
    def sub_for_email(email: str) -> str:
        return accounts.sub_for_email(email)

    def set_refresh_rotation(self, enabled: bool) -> None:
        self.context.rotate_refresh_tokens = enabled

    def advance_clock(self, seconds: float) -> None:
        """Move the sandbox's notion of now forward (expires access tokens after 3599 s, codes after 600 s)."""
        self.context.clock.advance(seconds)

    def request_counts(self) -> dict[str, int]:
        """Requests answered so far by method and first path segment, over HTTP (works out of process too)."""
        response = requests.get(self.url + "/_sandbox/requests", timeout=10)
        response.raise_for_status()
        counts: dict[str, int] = response.json()["counts"]
        return counts

    def now(self) -> float:
        return self.context.clock()

    # --- driving the OAuth flow like a browser

    def consent(
        self,
        email: str,
        *,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        state: str | None = "sandbox-state",
        access_type: str = "offline",
        prompt: str | None = None,
        code_challenge: str | None = None,
        decision: str = "allow",
        client_id: str | None = None,
        session: requests.Session | None = None,
    ) -> dict[str, str]:
        """Open the consent page, submit it, and return the redirect's query (code/state/scope or error)."""
        params = {
            "client_id": client_id or self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "access_type": access_type,
            "login_hint": email,
        }
        if state is not None:
            params["state"] = state
        if prompt:
            params["prompt"] = prompt
        if code_challenge:
            params.update(code_challenge=code_challenge, code_challenge_method="S256")
        http = session or requests.Session()
        page = http.get(self.auth_url, params=params, timeout=10)
        page.raise_for_status()
        return self.submit_consent(page.text, email=email, decision=decision, session=http)

    def submit_consent(
        self, page_html: str, *, email: str, decision: str = "allow", session: requests.Session | None = None
    ) -> dict[str, str]:
        """Post a consent page (as returned by an authorization URL) and return the redirect's query."""
        form = ConsentForm(page_html)
        if form.action != DECISION_PATH:
            raise AssertionError(f"not a sandbox consent page (form action {form.action!r})")
        fields = {**form.fields, "email": email, "decision": decision}
        answer = (session or requests).post(
            self.url + DECISION_PATH, data=fields, allow_redirects=False, timeout=10
        )
        if answer.status_code != 302:
            raise AssertionError(
                f"consent was not redirected: HTTP {answer.status_code}: {answer.text[:300]}"
            )
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        return {k: v[0] for k, v in query.items()}

    def exchange_code(
        self, code: str, *, redirect_uri: str = DEFAULT_REDIRECT_URI, code_verifier: str | None = None
    ) -> requests.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if code_verifier:
            data["code_verifier"] = code_verifier
        return requests.post(self.token_url, data=data, timeout=10)

    def refresh(self, refresh_token: str) -> requests.Response:
        data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        return requests.post(self.token_url, data=data, timeout=10)

    def onboard(
        self, email: str, *, scopes: tuple[str, ...] = DEFAULT_SCOPES, prompt: str | None = "consent"
    ) -> dict[str, Any]:
        """Consent (with PKCE) and exchange the code: Google's token response (refresh_token included)."""
        verifier, challenge = pkce_pair()
        query = self.consent(email, scopes=scopes, prompt=prompt, code_challenge=challenge)
        answer = self.exchange_code(query["code"], code_verifier=verifier)
        answer.raise_for_status()
        tokens: dict[str, Any] = answer.json()
        return tokens


@contextmanager
def running_sandbox(
    home: Path,
    *,
    clients: tuple[ClientSpec, ...] = (),
    rotate_refresh_tokens: bool = False,
    startup_timeout: float = 10.0,
) -> Iterator[SandboxHandle]:
    """Start the sandbox on a free 127.0.0.1 port in a background thread; stop it on exit."""
    sock = bind_socket()
    url = socket_url(sock)
    app = create_sandbox_app(Path(home), url, clients=clients, rotate_refresh_tokens=rotate_refresh_tokens)
    config = uvicorn.Config(app, access_log=False, log_level="warning", lifespan="off")
    with run_in_thread(config, sock, name="sandbox", startup_timeout=startup_timeout):
        yield SandboxHandle(url=url, home=Path(home), context=app.state.sandbox)


class _OutOfProcess:
    """The context of a sandbox running in another process: only its HTTP API can be reached."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the sandbox runs in another process; {name!r} needs one in this process")


@contextmanager
def running_sandbox_process(home: Path, *, startup_timeout: float = 60.0) -> Iterator[SandboxHandle]:
    """Start ``fitonfhir sandbox`` in a process of its own on a free 127.0.0.1 port; stop it on exit.

    For measurements of the import alone (memory, CPU): the sandbox's work and memory stay in its own
    process. Onboarding and every request go over HTTP; faults and the clock are not reachable.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    sock = bind_socket()
    port = int(sock.getsockname()[1])
    sock.close()  # the child binds it again right away (a small race with other processes)
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FITONFHIR_HOME": str(home / "home"), "FITONFHIR_SANDBOX_URL": url}
    command = [str(Path(sys.executable).parent / "fitonfhir"), "sandbox", "--home", str(home / "sandbox")]
    with (home / "sandbox.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if requests.get(url + "/fhir/metadata", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox process did not start; see {home / 'sandbox.log'}")
            time.sleep(0.1)
        yield SandboxHandle(url=url, home=home, context=cast(GoogleSandbox, _OutOfProcess()))
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
