"""The sandbox FHIR R4 server: a Starlette app over the SQLite store, mounted at ``/fhir`` by the sandbox.

Interactions: capabilities, read, vread, history, create (server id), update-as-create (versions,
ETag, If-Match), conditional create (If-None-Exist), conditional update (``PUT Type?search``), delete,
search (see fhir_search), transaction and batch Bundles. Every written resource is validated with the
fhir.resources R4B models; every error is an OperationOutcome. A PUT with unchanged content keeps the
current version (no-op), so re-running an import is visibly harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fitonfhir_sandbox.fhir_bundles import process_bundle
from fitonfhir_sandbox.fhir_search import DATE_PARAMS, REFERENCE_PARAMS, TOKEN_PARAMS
from fitonfhir_sandbox.fhir_store import FhirStore, Written
from fitonfhir_sandbox.fhir_validation import FhirProblem, check_type, operation_outcome

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
ADVERTISED_TYPES = ("Patient", "Device", "Observation", "Encounter", "Practitioner", "Organization")


def _response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = orjson.dumps(body) if body is not None else b""
    return Response(content, status_code=status, media_type=FHIR_JSON, headers=headers)


def _problem_response(problem: FhirProblem) -> Response:
    return _response(problem.outcome(), problem.status)


def _base(request: Request) -> str:
    """The server's base URL including the mount prefix (``root_path``, e.g. ``/fhir``)."""
    root = request.scope.get("root_path", "")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def _resource_headers(request: Request, resource: dict[str, Any], status: int) -> dict[str, str]:
    meta = resource.get("meta") or {}
    version = meta.get("versionId", "")
    headers = {"ETag": f'W/"{version}"'}
    if meta.get("lastUpdated"):
        stamp = datetime.fromisoformat(meta["lastUpdated"].replace("Z", "+00:00"))
        headers["Last-Modified"] = format_datetime(stamp, usegmt=True)
    if status == 201 or request.method in ("PUT", "POST"):
        location = f"{_base(request)}/{resource['resourceType']}/{resource['id']}/_history/{version}"
        headers["Content-Location"] = location
        if status == 201:
            headers["Location"] = location
    return headers


def _written_response(request: Request, written: Written) -> Response:
    headers = _resource_headers(request, written.resource, written.status)
    minimal = "return=minimal" in request.headers.get("prefer", "")
    return _response(None if minimal else written.resource, written.status, headers)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise FhirProblem(400, "Request body is empty; expected a FHIR resource (application/fhir+json)")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FhirProblem(400, f"Request body is not valid JSON: {exc}") from None


def _capability_statement(update_create: bool) -> dict[str, Any]:
    search_params = [{"name": n, "type": "token"} for n in (*TOKEN_PARAMS, "_id")]
    search_params += [{"name": n, "type": "reference"} for n in REFERENCE_PARAMS]
    search_params += [{"name": n, "type": "date"} for n in DATE_PARAMS]
    interactions = [
        {"code": c}
        for c in ("read", "vread", "update", "delete", "history-instance", "create", "search-type")
    ]
    resources = [
        {
            "type": rtype,
            "interaction": interactions,
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": update_create,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "conditionalDelete": "not-supported",
            "searchParam": search_params,
        }
        for rtype in ADVERTISED_TYPES
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2025-01-01",
        "kind": "instance",
        "software": {"name": "fitonfhir sandbox FHIR server"},
        "implementation": {
            "description": "Loopback FHIR R4 test double (SQLite); every R4 resource type is accepted"
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Every FHIR R4 resource type is accepted; the listed ones have indexed searches.",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }


def create_fhir_app(db_path: Path, *, update_create: bool = True) -> Starlette:
    """The sandbox FHIR app persisting in ``db_path``. ``update_create=False`` imitates servers that refuse
    client-assigned ids (PUT of a new id -> 405), to exercise clients' conditional-create fallback."""
    store = FhirStore(Path(db_path), update_create=update_create)
    capability = _capability_statement(update_create)

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except FhirProblem as problem:
                return _problem_response(problem)

        return endpoint

    async def metadata(request: Request) -> Response:
        return _response(capability)

    async def base(request: Request) -> Response:
        body = await _json_body(request)
        minimal = "return=minimal" in request.headers.get("prefer", "")
        return _response(await run_in_threadpool(process_bundle, store, body, minimal))

    async def type_level(request: Request) -> Response:
        rtype = request.path_params["rtype"]
        check_type(rtype)
        if request.method == "GET":
            return await _search(request, rtype)
        body = await _json_body(request)
        if request.method == "POST":
            if_none_exist = request.headers.get("if-none-exist")
            written = await run_in_threadpool(store.create, rtype, body, if_none_exist)
        else:
            query = request.url.query
            if not query:
                raise FhirProblem(400, f"PUT needs {rtype}/<id> or {rtype}?<search parameters>")
            written = await run_in_threadpool(store.conditional_update, rtype, query, body)
        return _written_response(request, written)

    async def _search(request: Request, rtype: str) -> Response:
        params = list(request.query_params.multi_items())
        found, total, query = await run_in_threadpool(store.search, rtype, params)
        base_url = _base(request)
        kept = [(k, v) for k, v in query.kept if k not in ("_count", "_offset")]
        links = [{"relation": "self", "url": f"{base_url}/{rtype}?{urlencode(params)}"}]
        more = (query.offset + len(found) < total) if total is not None else len(found) == query.count
        if found and more:
            page = [*kept, ("_count", str(query.count)), ("_offset", str(query.offset + query.count))]
            links.append({"relation": "next", "url": f"{base_url}/{rtype}?{urlencode(page)}"})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
        if total is not None:
            bundle["total"] = total
        bundle["entry"] = [
            {"fullUrl": f"{base_url}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in found
        ]
        return _response(bundle)

    async def instance(request: Request) -> Response:
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        if request.method == "GET":
            resource = await run_in_threadpool(store.read, rtype, rid)
            return _response(resource, 200, _resource_headers(request, resource, 200))
        if request.method == "DELETE":
            await run_in_threadpool(store.delete, rtype, rid)
            return _response(None, 204)
        check_type(rtype)
        body = await _json_body(request)
        written = await run_in_threadpool(store.update, rtype, rid, body, request.headers.get("if-match"))
        return _written_response(request, written)

    async def history(request: Request) -> Response:
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        versions = await run_in_threadpool(store.history, rtype, rid)
        entries = [{"fullUrl": f"{_base(request)}/{rtype}/{rid}", "resource": v} for v in versions]
        return _response(
            {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}
        )

    async def version(request: Request) -> Response:
        p = request.path_params
        resource = await run_in_threadpool(store.vread, p["rtype"], p["rid"], p["vid"])
        return _response(resource, 200, _resource_headers(request, resource, 200))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = {
            404: f"Unknown path {request.url.path}",
            405: f"Method {request.method} not allowed here",
        }.get(status, "Internal server error")
        code = {404: "not-found", 405: "not-supported"}.get(status, "exception")
        if status == 500:
            log.exception("sandbox FHIR server error on %s %s", request.method, request.url.path)
        return _response(
            operation_outcome([{"severity": "error", "code": code, "diagnostics": text}]), status
        )

    routes = [
        Route("/metadata", guarded(metadata), methods=["GET"]),
        Route("/", guarded(base), methods=["POST"]),
        Route("/{rtype}", guarded(type_level), methods=["GET", "POST", "PUT"]),
        Route("/{rtype}/{rid}", guarded(instance), methods=["GET", "PUT", "DELETE"]),
        Route("/{rtype}/{rid}/_history", guarded(history), methods=["GET"]),
        Route("/{rtype}/{rid}/_history/{vid}", guarded(version), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error})
    app.state.fhir_store = store
    return app
