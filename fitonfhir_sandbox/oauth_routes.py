"""Google's OAuth 2.0 endpoints, emulated: consent page, code + PKCE, tokens, revocation, OIDC keys.

Behaviour follows Google where it matters to clients: request errors on the authorization endpoint
show an error page (never a redirect to an unchecked URI); a refresh token is issued only for
``access_type=offline`` on first consent or with ``prompt=consent``; token errors use Google's JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fitonfhir_sandbox.accounts import DEFAULT_EMAIL, InvalidEmail, normalise_email, sub_for_email
from fitonfhir_sandbox.context import GoogleSandbox
from fitonfhir_sandbox.faults import google_error
from fitonfhir_sandbox.google_state import ACCESS_TOKEN_SECONDS, Client, TokenInfo

AUTH_PATH = "/o/oauth2/v2/auth"
DECISION_PATH = "/o/oauth2/v2/auth/decision"
TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"
JWKS_PATH = "/oauth2/v3/certs"
USERINFO_PATH = "/oauth2/v3/userinfo"
DISCOVERY_PATH = "/.well-known/openid-configuration"
CALLBACK_PATHS = ("/api/googlefit/callback", "/callback")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

_GOOGLE = "https://www.googleapis.com/auth/"
_FIT_FAMILIES = (
    "activity",
    "body",
    "heart_rate",
    "blood_pressure",
    "blood_glucose",
    "oxygen_saturation",
    "body_temperature",
    "location",
    "nutrition",
    "sleep",
    "reproductive_health",
)
_HEALTH_AREAS = (  # Google Health API v4 scopes (discovery document health.v4.json)
    "activity_and_fitness",
    "health_metrics_and_measurements",
    "sleep",
    "nutrition",
    "profile",
    "settings",
    "location",
    "mindfulness",
    "logged_symptoms",
    "reproductive_health",
    "ecg",
    "irn",
)
IDENTITY_SCOPES = frozenset(
    {"openid", "email", "profile", _GOOGLE + "userinfo.profile", _GOOGLE + "userinfo.email"}
)
KNOWN_SCOPES = IDENTITY_SCOPES | {
    f"{_GOOGLE}fitness.{f}.{m}" for f in _FIT_FAMILIES for m in ("read", "write")
}
HEALTH_SCOPES = frozenset(
    f"{_GOOGLE}googlehealth.{a}.{m}" for a in _HEALTH_AREAS for m in ("readonly", "writeonly")
)
KNOWN_SCOPES |= HEALTH_SCOPES
_AUTH_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "access_type",
    "prompt",
    "code_challenge",
    "code_challenge_method",
    "login_hint",
    "nonce",
    "include_granted_scopes",
)
_PKCE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_PROMPTS = {"none", "consent", "select_account"}


class AuthRequestError(Exception):
    """An authorization request Google would answer with an error page."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def redirect_allowed(client: Client, redirect_uri: str) -> bool:
    """Exact match against the client's list, or the loopback policy: http on 127.0.0.1/localhost, any
    port, path ``/api/googlefit/callback`` or ``/callback``, nothing else (no user info, query, fragment)."""
    if client.redirect_uris:
        return redirect_uri in client.redirect_uris
    try:
        parts = urlsplit(redirect_uri)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme == "http"
        and parts.hostname in LOOPBACK_HOSTS
        and parts.username is None
        and parts.password is None
        and parts.path in CALLBACK_PATHS
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
    )


def _validate(ctx: GoogleSandbox, params: dict[str, str]) -> Client:
    """Check an authorization request; raises AuthRequestError naming the bad parameter."""
    client_id = params.get("client_id", "")
    if not client_id:
        raise AuthRequestError("invalid_request", "Missing required parameter: client_id")
    client = ctx.state.client(client_id)
    if client is None:
        raise AuthRequestError("invalid_client", f"The OAuth client was not found: {client_id!r}.")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri:
        raise AuthRequestError("invalid_request", "Missing required parameter: redirect_uri")
    if not redirect_allowed(client, redirect_uri):
        raise AuthRequestError(
            "redirect_uri_mismatch",
            f"The redirect URI {redirect_uri!r} is not registered for client {client_id!r}.",
        )
    response_type = params.get("response_type", "")
    if response_type != "code":
        raise AuthRequestError(
            "unsupported_response_type" if response_type else "invalid_request",
            f"response_type must be 'code', got {response_type!r}",
        )
    scopes = params.get("scope", "").split()
    if not scopes:
        raise AuthRequestError("invalid_request", "Missing required parameter: scope")
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise AuthRequestError("invalid_scope", f"Some requested scopes were invalid: {unknown}")
    if params.get("access_type", "online") not in ("online", "offline"):
        raise AuthRequestError("invalid_request", f"Invalid access_type: {params['access_type']!r}")
    bad_prompts = set(params.get("prompt", "").split()) - _PROMPTS
    if bad_prompts:
        raise AuthRequestError("invalid_request", f"Invalid prompt: {sorted(bad_prompts)}")
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if method and not challenge:
        raise AuthRequestError("invalid_request", "code_challenge_method given without code_challenge")
    if challenge:
        if (method or "plain") not in ("S256", "plain"):
            raise AuthRequestError("invalid_request", f"Invalid code_challenge_method: {method!r}")
        if not _PKCE_RE.match(challenge):
            raise AuthRequestError(
                "invalid_request", "code_challenge must be 43-128 characters of [A-Za-z0-9._~-]"
            )
    return client


def _error_page(error: str, description: str, status: int = 400) -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Error</title></head><body>"
        f"<h1>Access blocked: authorization error</h1><p id='error'>Error {status}: {html.escape(error)}</p>"
        f"<p id='error-description'>{html.escape(description)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _consent_page(params: dict[str, str], email: str, message: str = "") -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
        for name in _AUTH_PARAMS
        if name in params
    )
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in params.get("scope", "").split())
    note = f'<p id="message" role="alert">{html.escape(message)}</p>' if message else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Sign in - Google Accounts (sandbox)</title>"
        "</head><body><h1>Fit on FHIR sandbox: Google sign-in</h1>"
        f"<p><b>{html.escape(params.get('client_id', ''))}</b> wants to access your Google Account:</p>"
        f'<ul id="scopes">{scopes}</ul>{note}'
        f'<form method="post" action="{DECISION_PATH}">'
        '<label for="email">Email</label> '
        f'<input type="text" id="email" name="email" value="{html.escape(email)}"> {hidden}'
        '<button type="submit" name="decision" value="allow" id="allow">Allow</button> '
        '<button type="submit" name="decision" value="deny" id="deny">Deny</button>'
        "</form></body></html>"
    )


def _redirect(redirect_uri: str, **params: str | None) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)


async def read_form(request: Request) -> dict[str, str]:
    """URL-encoded (or JSON) body fields; Starlette's form parser would need python-multipart."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def invalid_grant() -> JSONResponse:
    return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")


def bearer(ctx: GoogleSandbox, request: Request) -> TokenInfo | Response:
    """The live access token of a request, or Google's 401 response."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    info = (
        ctx.state.token_info(token.strip(), "access")
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    if info is not None:
        return info
    message = (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
        "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
    )
    return Response(
        google_error(401, message, "authError"),
        status_code=401,
        media_type="application/json; charset=UTF-8",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def _pkce_ok(challenge: str, method: str | None, verifier: str) -> bool:
    if (method or "plain") == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    else:
        expected = verifier
    return secrets.compare_digest(expected, challenge)


def _client_credentials(request: Request, fields: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    return fields.get("client_id", ""), fields.get("client_secret", "")


class OAuthRoutes:
    """Handlers bound to one sandbox context."""

    def __init__(self, ctx: GoogleSandbox) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(AUTH_PATH, self.authorize, methods=["GET"]),
            Route(DECISION_PATH, self.decision, methods=["POST"]),
            Route(TOKEN_PATH, self.token, methods=["POST"]),
            Route(REVOKE_PATH, self.revoke, methods=["GET", "POST"]),
            Route(JWKS_PATH, self.certs, methods=["GET"]),
            Route(USERINFO_PATH, self.userinfo, methods=["GET"]),
            Route(DISCOVERY_PATH, self.discovery, methods=["GET"]),
        ]

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        try:
            _validate(self.ctx, params)
        except AuthRequestError as exc:
            return _error_page(exc.error, exc.description)
        if "none" in params.get("prompt", "").split():
            return _redirect(params["redirect_uri"], error="interaction_required", state=params.get("state"))
        return HTMLResponse(_consent_page(params, params.get("login_hint") or DEFAULT_EMAIL))

    async def decision(self, request: Request) -> Response:
        fields = await read_form(request)
        params = {k: v for k, v in fields.items() if k in _AUTH_PARAMS}
        try:
            _validate(self.ctx, params)
        except AuthRequestError as exc:
            return _error_page(exc.error, exc.description)
        decision = fields.get("decision")
        if decision == "deny":
            return _redirect(params["redirect_uri"], error="access_denied", state=params.get("state"))
        if decision != "allow":
            return _error_page("invalid_request", f"decision must be 'allow' or 'deny', got {decision!r}")
        try:
            email = normalise_email(fields.get("email", ""))
        except InvalidEmail as exc:
            return HTMLResponse(_consent_page(params, fields.get("email", ""), str(exc)), status_code=400)
        sub = sub_for_email(email)
        self.ctx.state.remember_account(sub, email)
        code = self.ctx.state.issue_code(
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            sub=sub,
            scope=" ".join(dict.fromkeys(params["scope"].split())),
            access_type=params.get("access_type", "online"),
            prompt=params.get("prompt", ""),
            nonce=params.get("nonce"),
            code_challenge=params.get("code_challenge"),
            code_challenge_method=params.get("code_challenge_method"),
        )
        scope = " ".join(dict.fromkeys(params["scope"].split()))
        return _redirect(params["redirect_uri"], code=code, state=params.get("state"), scope=scope)

    async def token(self, request: Request) -> Response:
        fields = await read_form(request)
        client_id, secret = _client_credentials(request, fields)
        if not client_id:
            return oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        client = self.ctx.state.client(client_id)
        if client is None:
            return oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if not secret or not client.secret_matches(secret):
            return oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = fields.get("grant_type", "")
        if not grant_type:
            return oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(client, fields)
        if grant_type == "refresh_token":
            return self._refresh(client, fields)
        return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange_code(self, client: Client, fields: dict[str, str]) -> Response:
        code, redirect_uri = fields.get("code", ""), fields.get("redirect_uri", "")
        if not code:
            return oauth_error(400, "invalid_request", "Missing required parameter: code")
        if not redirect_uri:
            return oauth_error(400, "invalid_request", "Missing required parameter: redirect_uri")
        record = self.ctx.state.use_code(code)
        if record is None or record.client_id != client.client_id:
            return invalid_grant()
        if record.redirect_uri != redirect_uri:
            return oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        verifier = fields.get("code_verifier")
        if record.code_challenge:
            if not verifier:
                return oauth_error(400, "invalid_grant", "Missing code verifier.")
            if not _pkce_ok(record.code_challenge, record.code_challenge_method, verifier):
                return oauth_error(400, "invalid_grant", "Invalid code verifier.")
        elif verifier:
            return oauth_error(400, "invalid_request", "code_verifier or verifier is not needed.")
        offline = record.access_type == "offline"
        existing = self.ctx.state.active_grant(record.sub, client.client_id)
        first_offline_consent = existing is None or not existing.offline
        issue_refresh = offline and (first_offline_consent or "consent" in record.prompt.split())
        grant = self.ctx.state.save_grant(record.sub, client.client_id, record.scope, offline)
        body = self._token_body(
            grant.id, record.scope, grant.sub, grant.email, client.client_id, record.nonce
        )
        if issue_refresh:
            body["refresh_token"] = self.ctx.state.issue_token(grant.id, "refresh", None)
        return _token_response(body)

    def _refresh(self, client: Client, fields: dict[str, str]) -> Response:
        refresh_token = fields.get("refresh_token", "")
        if not refresh_token:
            return oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        info = self.ctx.state.token_info(refresh_token, "refresh")
        if info is None:
            return invalid_grant()
        if info.grant.client_id != client.client_id:
            return oauth_error(401, "unauthorized_client", "Unauthorized")
        grant = info.grant
        body = self._token_body(grant.id, grant.scope, grant.sub, grant.email, client.client_id, None)
        if self.ctx.rotate_refresh_tokens:
            self.ctx.state.revoke_token(refresh_token)
            body["refresh_token"] = self.ctx.state.issue_token(grant.id, "refresh", None)
        return _token_response(body)

    def _token_body(
        self, grant_id: int, scope: str, sub: str, email: str, client_id: str, nonce: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.ctx.state.issue_token(grant_id, "access", ACCESS_TOKEN_SECONDS),
            "expires_in": ACCESS_TOKEN_SECONDS,
            "scope": scope,
            "token_type": "Bearer",
        }
        if IDENTITY_SCOPES.intersection(scope.split()):
            now = int(self.ctx.clock())
            claims: dict[str, Any] = {
                "iss": self.ctx.base_url,
                "azp": client_id,
                "aud": client_id,
                "sub": sub,
                "email": email,
                "email_verified": True,
                "name": email.split("@", 1)[0],
                "iat": now,
                "exp": now + ACCESS_TOKEN_SECONDS,
            }
            if nonce:
                claims["nonce"] = nonce
            body["id_token"] = self.ctx.sign(claims)
        return body

    async def revoke(self, request: Request) -> Response:
        fields = await read_form(request) if request.method == "POST" else {}
        token = request.query_params.get("token") or fields.get("token", "")
        if not token:
            return oauth_error(400, "invalid_request", "Missing required parameter: token")
        grant = self.ctx.state.grant_for_any_token(token)
        if grant is None:
            return oauth_error(400, "invalid_token", "Token expired or revoked")
        self.ctx.state.revoke_grant(grant.id)
        return JSONResponse({})

    async def certs(self, request: Request) -> Response:
        return JSONResponse(self.ctx.jwks(), headers={"Cache-Control": "public, max-age=3600"})

    async def userinfo(self, request: Request) -> Response:
        info = bearer(self.ctx, request)
        if isinstance(info, Response):
            return info
        email = info.grant.email
        return JSONResponse(
            {"sub": info.grant.sub, "email": email, "email_verified": True, "name": email.split("@")[0]}
        )

    async def discovery(self, request: Request) -> Response:
        base = self.ctx.base_url
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": base + AUTH_PATH,
                "token_endpoint": base + TOKEN_PATH,
                "revocation_endpoint": base + REVOKE_PATH,
                "userinfo_endpoint": base + USERINFO_PATH,
                "jwks_uri": base + JWKS_PATH,
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["plain", "S256"],
                "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub"],
            }
        )


def _token_response(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
