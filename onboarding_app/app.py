"""The onboarding ASGI app: the original fit-on-fhir routes with its defects fixed.

``GET /api/googlefit/authorize`` -> consent URL (JSON, or a 302 for browsers);
``GET /api/googlefit/callback`` <- Google; every failure goes back to the caller's approved
redirect URL with ``error=`` (or to an HTML 400 page when the state cannot be trusted);
``POST|GET /api/googlefit/revoke``; plus ``/``, ``/done``, ``/error`` and ``/healthz``.
Endpoints are plain functions: Starlette runs them in its thread pool, so blocking clients are fine.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fitonfhir_dagster.google_oauth import pkce_pair
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.users import UsersTable
from fitonfhir_dagster.stores.vault import TokenVault

from . import pages
from .google_consent import CALLBACK_PATH, GoogleConsent, google_authority
from .logs import install_log_redaction
from .oauth_state import PendingAuthorization, StateError, StateStore, load_state_secret
from .onboard import Onboarding, OnboardingError, revoke_token, revoke_token_user
from .patients import PatientServer
from .redirects import RedirectAllowList, with_query
from .tokens import Caller, InvalidToken, OidcVerifier, bearer_token

log = logging.getLogger(__name__)

AUTHORIZE_PATH = "/api/googlefit/authorize"
REVOKE_PATH = "/api/googlefit/revoke"
MAX_IDENTIFIER_LENGTH = 256
MAX_STATE_LENGTH = 1024
MAX_FORM_BYTES = 16_384
FORM_TYPE = "application/x-www-form-urlencoded"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}

MSG_ANONYMOUS_MISSING = (
    "external_id, external_system, redirect_url are required query parameters with anonymous "
    "authorization. The request is missing {}."
)
MSG_AUTHENTICATED_FORBIDDEN = (
    "external_id and external_system are forbidden query parameters with authenticated authorization. "
    "The request contains {}."
)
MSG_REDIRECT_MISSING = "The required parameter redirect_url was not provided in the request."
MSG_REDIRECT_LIST_EMPTY = "The approved redirect URL list is empty."
MSG_REDIRECT_NOT_ALLOWED = "The redirect URL was not found in the list of approved redirect URLs."
MSG_REVOKE_MISSING = (
    "external_id, external_system, revoke_token are required parameters to revoke with anonymous "
    "authorization. The request is missing {}."
)
MSG_REVOKE_TOKEN_WRONG = "The revoke_token does not match external_id and external_system."


class BadRequest(Exception):
    """A 400 with a plain-text message naming what was wrong."""


class Unauthorized(Exception):
    """A 401: the bearer token is missing or invalid (the body stays empty, as the original)."""


@dataclass
class Identity:
    external_system: str
    external_id: str


@dataclass
class OnboardingContext:
    settings: Settings
    state: StateStore
    allow_list: RedirectAllowList
    google: GoogleConsent
    bearer: OidcVerifier | None
    onboarding: Onboarding
    secret: bytes


def _bad_request(message: str) -> Response:
    return PlainTextResponse(message, status_code=400, headers=_SECURITY_HEADERS)


def _check_identifier(name: str, value: str, *, uri: bool) -> str:
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise BadRequest(f"{name} must be at most {MAX_IDENTIFIER_LENGTH} characters, got {len(value)}.")
    if _CONTROL_RE.search(value) or (uri and any(c.isspace() for c in value)):
        raise BadRequest(
            f"{name} contains whitespace or control characters, which a FHIR identifier cannot hold."
        )
    if uri and "|" in value:
        raise BadRequest(f"{name} must be a URI and cannot contain '|'.")
    if not value.strip():
        raise BadRequest(f"{name} is blank.")
    return value


def _params(request: Request, form: dict[str, Any] | None = None) -> dict[str, str]:
    values = dict(request.query_params)
    for k, v in (form or {}).items():
        if isinstance(v, str):
            values.setdefault(k, v)
    return values


def _present(params: dict[str, str], name: str) -> bool:
    return bool(params.get(name, "").strip())


def _caller_state(params: dict[str, str]) -> str | None:
    state = params.get("state")
    if state is None or state == "":
        return None
    if len(state) > MAX_STATE_LENGTH:
        raise BadRequest(f"state must be at most {MAX_STATE_LENGTH} characters, got {len(state)}.")
    return state


def _authenticate(ctx: OnboardingContext, request: Request) -> Caller:
    assert ctx.bearer is not None
    try:
        return ctx.bearer.verify(bearer_token(request.headers.get("authorization")))
    except InvalidToken as exc:
        log.info("bearer token refused: %s", exc)
        raise Unauthorized() from None


def _identity(
    ctx: OnboardingContext,
    request: Request,
    params: dict[str, str],
    anonymous_required: tuple[str, ...],
    missing_message: str,
) -> Identity:
    """Who the patient is: query parameters (anonymous) or the caller's JWT ``iss``/``sub``."""
    if ctx.settings.anonymous_login:
        missing = [n for n in anonymous_required if not _present(params, n)]
        if missing:
            raise BadRequest(missing_message.format(", ".join(missing)))
        return Identity(
            _check_identifier("external_system", params["external_system"], uri=True),
            _check_identifier("external_id", params["external_id"], uri=False),
        )
    caller = _authenticate(ctx, request)
    forbidden = [n for n in ("external_id", "external_system") if n in params]
    if forbidden:
        raise BadRequest(MSG_AUTHENTICATED_FORBIDDEN.format(", ".join(forbidden)))
    return Identity(
        _check_identifier("token iss", caller.issuer, uri=True),
        _check_identifier("token sub", caller.subject, uri=False),
    )


def _approved(ctx: OnboardingContext, redirect_url: str) -> str:
    if not len(ctx.allow_list):
        raise BadRequest(MSG_REDIRECT_LIST_EMPTY)
    if redirect_url not in ctx.allow_list:
        raise BadRequest(MSG_REDIRECT_NOT_ALLOWED)
    return redirect_url


def _handle(endpoint: Any) -> Any:
    """Turn BadRequest/Unauthorized into 400 text / 401 empty responses."""

    def wrapped(request: Request) -> Response:
        try:
            return endpoint(request)
        except BadRequest as exc:
            return _bad_request(str(exc))
        except Unauthorized:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer", **_SECURITY_HEADERS})

    return wrapped


def _wants_html(request: Request) -> bool:
    return request.headers.get("accept", "").split(",")[0].strip().lower().startswith("text/html")


def _authorize(ctx: OnboardingContext, request: Request) -> Response:
    params = _params(request)
    if ctx.settings.anonymous_login:
        identity = _identity(
            ctx, request, params, ("external_id", "external_system", "redirect_url"), MSG_ANONYMOUS_MISSING
        )
    else:
        identity = _identity(ctx, request, params, (), "")
        if not _present(params, "redirect_url"):
            raise BadRequest(MSG_REDIRECT_MISSING)
    redirect_url = _approved(ctx, params["redirect_url"])
    verifier, _ = pkce_pair()  # the challenge is recomputed from the verifier in the consent URL
    pending = PendingAuthorization(
        external_system=identity.external_system,
        external_id=identity.external_id,
        redirect_url=redirect_url,
        caller_state=_caller_state(params),
        code_verifier=verifier,
        anonymous=ctx.settings.anonymous_login,
    )
    token, expires_at = ctx.state.issue(pending)
    auth_url = ctx.google.authorize_url(token, verifier)
    if _wants_html(request):
        return RedirectResponse(auth_url, status_code=302, headers=_SECURITY_HEADERS)
    return JSONResponse({"authUrl": auth_url, "expiresAt": expires_at.isoformat()}, headers=_SECURITY_HEADERS)


def _callback(ctx: OnboardingContext, request: Request) -> Response:
    params = _params(request)
    try:
        pending = ctx.state.consume(params.get("state"))
    except StateError as exc:
        log.info("callback refused: %s", exc.reason)
        return pages.error_page(exc.reason, status_code=400, detail=str(exc))
    if pending.redirect_url not in ctx.allow_list:  # the allow-list changed since authorize
        return pages.error_page("redirect_not_allowed", status_code=400)

    def back(**extra: str | None) -> Response:
        url = with_query(pending.redirect_url, **extra, state=pending.caller_state)
        return RedirectResponse(url, status_code=302, headers=_SECURITY_HEADERS)

    if "error" in params:
        reason = "access_denied" if params["error"] == "access_denied" else "authorization_failed"
        log.info("consent not given: %s", reason)
        return back(error=reason)
    code = params.get("code", "")
    if not code.strip():
        return back(error="missing_code")
    try:
        user = ctx.onboarding.complete(pending, code)
    except OnboardingError as exc:
        log.warning("onboarding failed (%s): %s", exc.reason, exc)
        return back(error=exc.reason)
    except Exception as exc:
        log.error("onboarding failed unexpectedly: %s", type(exc).__name__)
        return back(error="server_error")
    extra = {}
    if pending.anonymous:
        extra["revoke_token"] = revoke_token(
            ctx.secret, pending.external_system, pending.external_id, user.key
        )
    return back(**extra)


class BodyTooLarge(Exception):
    """A 413: the body is (or announces to be) larger than MAX_FORM_BYTES; refused before it is all read."""


MSG_BODY_TOO_LARGE = f"The request body is larger than {MAX_FORM_BYTES} bytes."


async def _bounded_body(request: Request) -> bytes:
    """The body, read only as far as MAX_FORM_BYTES: a larger Content-Length is refused before reading
    anything, and a streamed (chunked) body as soon as the limit is passed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("The Content-Length header is not a number.") from None
        if size > MAX_FORM_BYTES:
            raise BodyTooLarge(MSG_BODY_TOO_LARGE)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BodyTooLarge(MSG_BODY_TOO_LARGE)
    return bytes(body)


async def _form_fields(request: Request) -> dict[str, str]:
    """URL-encoded body fields (Starlette's form parser would need python-multipart)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        return {}
    body = await _bounded_body(request)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise BadRequest("The request body is not UTF-8 form data.") from None


async def _revoke_endpoint(request: Request) -> Response:
    ctx: OnboardingContext = request.app.state.ctx
    try:
        form = await _form_fields(request) if request.method == "POST" else {}
    except BadRequest as exc:
        return _bad_request(str(exc))
    except BodyTooLarge as exc:  # the rest of the body is never read: close the connection
        return PlainTextResponse(
            str(exc), status_code=413, headers={"Connection": "close", **_SECURITY_HEADERS}
        )
    return await run_in_threadpool(_handle(lambda r: _revoke(ctx, r, form)), request)


def _revoke(ctx: OnboardingContext, request: Request, form: dict[str, Any]) -> Response:
    params = _params(request, form)
    identity = _identity(
        ctx, request, params, ("external_id", "external_system", "revoke_token"), MSG_REVOKE_MISSING
    )
    user_key = None  # authenticated mode: every account the caller's own identity onboarded
    if ctx.settings.anonymous_login:
        user_key = revoke_token_user(
            ctx.secret, identity.external_system, identity.external_id, params.get("revoke_token")
        )
        if user_key is None:
            return PlainTextResponse(MSG_REVOKE_TOKEN_WRONG, status_code=403, headers=_SECURITY_HEADERS)
    redirect_url = _approved(ctx, params["redirect_url"]) if _present(params, "redirect_url") else None
    caller_state = _caller_state(params)
    try:
        keys = ctx.onboarding.revoke(identity.external_system, identity.external_id, user_key)
    except OnboardingError as exc:
        log.warning("revoke failed (%s): %s", exc.reason, exc)
        if redirect_url:
            return RedirectResponse(
                with_query(redirect_url, error=exc.reason, state=caller_state), 302, headers=_SECURITY_HEADERS
            )
        return JSONResponse({"error": exc.reason}, status_code=502, headers=_SECURITY_HEADERS)
    if redirect_url:
        return RedirectResponse(with_query(redirect_url, state=caller_state), 302, headers=_SECURITY_HEADERS)
    return JSONResponse({"revoked": len(keys)}, headers=_SECURITY_HEADERS)


def own_pages(settings: Settings) -> tuple[str, str]:
    """The app's own result pages: always approved redirect targets (they cannot redirect further)."""
    return settings.onboarding_url + "/done", settings.onboarding_url + "/error"


def create_app(
    settings: Settings,
    *,
    users: UsersTable | None = None,
    vault: TokenVault | None = None,
    fhir: PatientServer | None = None,
    state: StateStore | None = None,
) -> Starlette:
    """Build the app; stores and the FHIR client default to the ones ``settings`` select."""
    from fitonfhir_dagster.stores.factory import open_users_table, open_vault

    install_log_redaction()
    secret = load_state_secret(settings.state_secret, settings.home)
    if fhir is None:
        from fitonfhir_dagster.fhir.fhir_client import FhirClient

        fhir = FhirClient.from_settings(settings)
    google = GoogleConsent(settings)
    ctx = OnboardingContext(
        settings=settings,
        state=state or StateStore(settings.home / "onboarding" / "state.sqlite3", secret),
        allow_list=RedirectAllowList((*settings.redirect_urls, *own_pages(settings))),
        google=google,
        bearer=None
        if settings.anonymous_login
        else OidcVerifier(settings.identity_providers, settings.audience),
        onboarding=Onboarding(
            google=google,
            id_tokens=OidcVerifier((google_authority(settings),), settings.google_client_id),
            fhir=fhir,
            users=users or open_users_table(settings),
            vault=vault or open_vault(settings),
            source=settings.default_source,
        ),
        secret=secret,
    )

    def landing(request: Request) -> Response:
        return pages.landing_page(
            anonymous=settings.anonymous_login,
            authorize_path=AUTHORIZE_PATH,
            redirect_url=own_pages(settings)[0],
        )

    def done(request: Request) -> Response:
        error = request.query_params.get("error")
        if error:
            return pages.error_page(error)
        return pages.done_page(request.query_params.get("state"))

    def error(request: Request) -> Response:
        return pages.error_page(request.query_params.get("error", ""))

    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", landing),
        Route("/done", done),
        Route("/error", error),
        Route("/healthz", healthz),
        Route(AUTHORIZE_PATH, _handle(lambda r: _authorize(ctx, r)), methods=["GET"]),
        Route(CALLBACK_PATH, _handle(lambda r: _callback(ctx, r)), methods=["GET"]),
        Route(REVOKE_PATH, _revoke_endpoint, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False  # the original matched paths exactly
    app.state.ctx = ctx
    return app
