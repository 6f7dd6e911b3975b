"""FHIR R4 REST client: reads, searches with paging, versioned and conditional writes, Bundles.

Works with any R4 server (the sandbox, Medplum, Azure Health Data Services). Bodies are dicts
serialised with orjson; Bundles are chunked to ``bundle_size`` entries. Every request goes through one
bounded retry loop (429/5xx/timeouts, exponential backoff with jitter, Retry-After honoured; a 401 is
retried once after the credential is refreshed). Requests that could duplicate data when repeated
(POST without If-None-Exist) are only retried when the server said it did not process them (429, 503).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import requests

from fitonfhir_dagster.fhir import bundles
from fitonfhir_dagster.fhir.auth import FhirAuth, auth_from_settings
from fitonfhir_dagster.fhir.bundles import EntryResult
from fitonfhir_dagster.fhir.fhir_errors import FhirError, error_for
from fitonfhir_dagster.http.retry_schedule import RetrySchedule, is_retryable_status, parse_retry_after
from fitonfhir_dagster.http.sessions import new_session

if TYPE_CHECKING:
    from fitonfhir_dagster.settings import Settings

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
DEFAULT_BUNDLE_SIZE = 500
READ_MANY_CHUNK = 100
MAX_PAGES = 10_000
_REFUSED_IDS = (405, 422)
_SAFE_TO_REPEAT = frozenset({429, 503})

# A FHIR server's Retry-After is honoured up to 5 minutes; 4 retries of at most that bound the total wait.
FHIR_RETRY_SCHEDULE = RetrySchedule(
    max_attempts=5, base_delay=0.5, max_delay=30.0, max_retry_after=300.0, max_total_wait=4 * 300.0
)

WRITE_MODE_PUT = "put"
WRITE_MODE_CONDITIONAL_CREATE = "conditional-create"


@dataclass
class UpsertSummary:
    """What ``upsert_many`` did; ``results`` hold the server's answers for the resources it wrote."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    results: list[EntryResult] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.created + self.updated


class FhirClient:
    """A small, synchronous FHIR R4 client (``requests``), safe to share across threads for reads."""

    def __init__(
        self,
        base_url: str,
        auth: FhirAuth | None = None,
        session: requests.Session | None = None,
        timeout: float = 60,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        bundle_size: int = DEFAULT_BUNDLE_SIZE,
        retry_schedule: RetrySchedule | None = None,
    ) -> None:
        """``max_attempts``, when given, overrides that of ``retry_schedule`` (default ``FHIR_RETRY_SCHEDULE``)."""
        schedule = retry_schedule or FHIR_RETRY_SCHEDULE
        if max_attempts is not None:
            schedule = dataclasses.replace(schedule, max_attempts=max_attempts)  # validates it
        if bundle_size < 1:
            raise ValueError(f"bundle_size must be >= 1, got {bundle_size}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"FHIR base URL must be an absolute http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self._origin = (parts.scheme, parts.netloc)
        self.auth = auth
        # several users and several chunks of one user-day are in flight at once (pipeline.runner)
        self.session = session if session is not None else new_session()
        self.timeout = timeout
        self.retry_schedule = schedule
        self.bundle_size = bundle_size
        self._sleep = sleep
        self._capabilities: dict[str, Any] | None = None
        self.write_mode: str | None = None  # decided on the first upsert; see ``upsert``

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r})"

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FhirClient:
        kwargs.setdefault("bundle_size", settings.fhir_bundle_size)
        return cls(settings.fhir_url, auth=auth_from_settings(settings), **kwargs)

    # ------------------------------------------------------------------ transport

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            if (parts.scheme, parts.netloc) != self._origin:
                # Never send our credential to a host the server pointed us at.
                raise FhirError(None, "GET", parts.path, detail="server returned a link to another origin")
            return path
        return self.base_url + path.lstrip("/")

    def _path_for_errors(self, url: str) -> str:
        path = urlsplit(url).path
        base_path = urlsplit(self.base_url).path
        return path[len(base_path) :] if path.startswith(base_path) else path

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> requests.Response:
        url = self._url(path)
        data = orjson.dumps(body) if body is not None else None
        base_headers = {"Accept": FHIR_JSON}
        if data is not None:
            base_headers["Content-Type"] = FHIR_JSON
        if headers:
            base_headers.update(headers)
        refreshed = False
        budget = self.retry_schedule.budget()
        while True:
            send_headers = dict(base_headers)
            if self.auth is not None:
                send_headers["Authorization"] = self.auth.authorization()
            try:
                response = self.session.request(
                    method, url, params=params, data=data, headers=send_headers, timeout=self.timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                safe = idempotent or isinstance(exc, requests.ConnectTimeout)
                delay = budget.next_delay() if safe else None
                if delay is None:
                    raise error_for(
                        None, method, self._path_for_errors(url), detail=type(exc).__name__
                    ) from None
                log.warning(
                    "FHIR %s %s: %s, retrying in %.1fs",
                    method,
                    self._path_for_errors(url),
                    type(exc).__name__,
                    delay,
                )
                self._sleep(delay)
                continue
            status = response.status_code
            if status == 401 and self.auth is not None and not refreshed and self.auth.invalidate():
                refreshed = True  # a credential refresh is not a failed attempt
                continue
            repeatable = idempotent or status in _SAFE_TO_REPEAT
            delay = None
            if is_retryable_status(status) and repeatable:
                delay = budget.next_delay(parse_retry_after(response.headers.get("Retry-After")))
            if delay is not None:
                log.warning(
                    "FHIR %s %s: HTTP %s, retrying in %.1fs",
                    method,
                    self._path_for_errors(url),
                    status,
                    delay,
                )
                response.close()
                self._sleep(delay)
                continue
            return response

    def _fail(self, response: requests.Response, method: str) -> FhirError:
        outcome = _json_or_none(response)
        detail = "" if outcome else response.text[:200]
        return error_for(response.status_code, method, self._path_for_errors(response.url), outcome, detail)

    def _json(self, response: requests.Response, method: str) -> dict[str, Any]:
        if not (200 <= response.status_code < 300):
            raise self._fail(response, method)
        body = _json_or_none(response)
        return body if isinstance(body, dict) else {}

    # ------------------------------------------------------------------ reads

    def capabilities(self, refresh: bool = False) -> dict[str, Any]:
        """The server's CapabilityStatement (cached)."""
        if self._capabilities is None or refresh:
            self._capabilities = self._json(self._request("GET", "metadata"), "GET")
        return self._capabilities

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The current version, or None when the resource does not exist (404/410)."""
        response = self._request("GET", f"{resource_type}/{resource_id}")
        if response.status_code in (404, 410):
            return None
        return self._json(response, "GET")

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> dict[str, Any] | None:
        response = self._request("GET", f"{resource_type}/{resource_id}/_history/{version_id}")
        if response.status_code in (404, 410):
            return None
        return self._json(response, "GET")

    def search_bundle(self, resource_type: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The first searchset page as returned by the server."""
        return self._json(self._request("GET", resource_type, params=params), "GET")

    def search(
        self, resource_type: str, params: Mapping[str, Any] | None = None, max_pages: int = MAX_PAGES
    ) -> list[dict[str, Any]]:
        """Every match, following ``next`` links (bounded by ``max_pages``)."""
        page = self.search_bundle(resource_type, params)
        found = bundles.resources_of(page)
        seen: set[str] = set()
        pages = 1
        while (link := bundles.next_link(page)) is not None:
            if link in seen or pages >= max_pages:
                raise FhirError(None, "GET", resource_type, detail=f"paging did not end after {pages} pages")
            seen.add(link)
            page = self._json(self._request("GET", link), "GET")
            found.extend(bundles.resources_of(page))
            pages += 1
        return found

    def read_many(
        self, resource_type: str, ids: Iterable[str], chunk_size: int = READ_MANY_CHUNK
    ) -> dict[str, dict[str, Any]]:
        """Existing resources by id (missing ids are simply absent), via ``_id=a,b,c`` searches."""
        unique = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        for part in bundles.chunks(unique, chunk_size):
            for resource in self.search(resource_type, {"_id": ",".join(part), "_count": str(len(part))}):
                found[str(resource["id"])] = resource
        return found

    def read_batch(
        self, resource_type: str, ids: Iterable[str], chunk_size: int | None = None
    ) -> dict[str, dict[str, Any]]:
        """Existing resources by id, ``bundle_size`` ids per request: a batch Bundle of GET entries
        (no URL-length limit, unlike ``_id=`` searches). Missing ids (404/410) are simply absent."""
        unique = list(dict.fromkeys(ids))
        found: dict[str, dict[str, Any]] = {}
        for part in bundles.chunks(unique, chunk_size or self.bundle_size):
            entries = [{"request": {"method": "GET", "url": f"{resource_type}/{rid}"}} for rid in part]
            for rid, result in zip(part, self.batch(entries), strict=True):
                if result.status in (404, 410):
                    continue
                if not result.ok or result.resource is None:
                    raise error_for(
                        result.status, "GET", f"{resource_type}/{rid}", result.outcome, "batch read failed"
                    )
                found[str(result.resource.get("id", rid))] = result.resource
        return found

    def find_by_identifier(self, resource_type: str, system: str | None, value: str) -> list[dict[str, Any]]:
        """Resources whose identifier matches exactly (some servers match only a prefix of long values)."""
        matches = self.search(resource_type, {"identifier": bundles.identifier_token(system, value)})
        return [r for r in matches if _has_identifier(r, system, value)]

    # ------------------------------------------------------------------ writes

    def create(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """POST with a server-assigned id. Not retried on timeouts (it could create twice)."""
        body = {k: v for k, v in resource.items() if k != "id"}
        response = self._request(
            "POST", str(resource["resourceType"]), body=body, idempotent=False, headers=_RETURN_REPRESENTATION
        )
        return self._written(response, "POST")

    def update(self, resource: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """PUT ``<type>/<id>`` (update-as-create); ``if_match`` is the expected versionId (412 if stale)."""
        rtype, rid = str(resource["resourceType"]), str(resource["id"])
        headers = dict(_RETURN_REPRESENTATION)
        if if_match:
            headers["If-Match"] = bundles.etag_for(if_match)
        response = self._request("PUT", f"{rtype}/{rid}", body=resource, headers=headers)
        return self._written(response, "PUT")

    def conditional_create(
        self, resource: Mapping[str, Any], identifier_query: str | Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """POST with ``If-None-Exist``: (resource, True) when created, (existing, False) when it matched."""
        body = {k: v for k, v in resource.items() if k != "id"}
        headers = {"If-None-Exist": bundles.encode_query(identifier_query), **_RETURN_REPRESENTATION}
        response = self._request("POST", str(resource["resourceType"]), body=body, headers=headers)
        return self._written(response, "POST"), response.status_code == 201

    def conditional_update(
        self, resource: Mapping[str, Any], query: str | Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT ``<type>?<query>``: update the single match, create when there is none."""
        path = f"{resource['resourceType']}?{bundles.encode_query(query)}"
        response = self._request("PUT", path, body=resource, headers=_RETURN_REPRESENTATION)
        return self._written(response, "PUT")

    def delete(self, resource_type: str, resource_id: str) -> None:
        response = self._request("DELETE", f"{resource_type}/{resource_id}")
        if response.status_code not in (200, 202, 204, 404, 410):
            raise self._fail(response, "DELETE")

    def _written(self, response: requests.Response, method: str) -> dict[str, Any]:
        body = self._json(response, method)
        if body.get("resourceType") and body.get("resourceType") != "OperationOutcome":
            return body
        location = response.headers.get("Content-Location") or response.headers.get("Location")
        if location:  # the server answered minimally: read what it stored
            path = self._path_for_errors(location) if location.startswith("http") else location
            parts = path.split("/_history/")[0].strip("/").split("/")
            if len(parts) >= 2:
                current = self.read(parts[-2], parts[-1])
                if current is not None:
                    return current
        raise FhirError(
            response.status_code,
            method,
            self._path_for_errors(response.url),
            detail="server returned neither the resource nor its location",
        )

    # ------------------------------------------------------------------ bundles

    def transaction(self, entries: Sequence[Mapping[str, Any]], minimal: bool = False) -> list[EntryResult]:
        """All-or-nothing per chunk of ``bundle_size`` entries (chunks commit one after the other).

        A failed chunk raises (412 -> PreconditionFailed: re-read and merge); earlier chunks stay written,
        which is safe because re-running the same entries is idempotent. ``minimal`` asks the server to
        leave the written resources out of its answer (``Prefer: return=minimal``; statuses stay).
        """
        return self._send_bundles("transaction", entries, minimal)

    def batch(self, entries: Sequence[Mapping[str, Any]]) -> list[EntryResult]:
        """Independent entries; each result says its own status (failures are returned, not raised)."""
        return self._send_bundles("batch", entries)

    def _send_bundles(
        self, kind: str, entries: Sequence[Mapping[str, Any]], minimal: bool = False
    ) -> list[EntryResult]:
        results: list[EntryResult] = []
        headers = {"Prefer": "return=minimal"} if minimal else None
        for part in bundles.chunks(list(entries), self.bundle_size):
            response = self._request(
                "POST",
                "",
                body=bundles.bundle(kind, part),
                headers=headers,
                idempotent=all(map(_repeatable_entry, part)),
            )
            body = self._json(response, "POST")
            if body.get("type") != f"{kind}-response":
                raise FhirError(
                    response.status_code,
                    "POST",
                    kind,
                    detail=f"expected a {kind}-response Bundle, got {body.get('type')!r}",
                )
            chunk_results = bundles.entry_results(body)
            if len(chunk_results) != len(part):
                raise FhirError(
                    response.status_code,
                    "POST",
                    kind,
                    detail=f"{len(part)} entries sent, {len(chunk_results)} answered",
                )
            results.extend(chunk_results)
        return results

    # ------------------------------------------------------------------ idempotent writes

    def upsert(self, resource: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """Write ``resource`` under its deterministic id; falls back to a conditional create by identifier
        for servers that refuse client-assigned ids (remembered in ``write_mode``)."""
        mode = self.write_mode_for(str(resource["resourceType"]))
        if mode == WRITE_MODE_PUT:
            try:
                return self.update(resource, if_match=if_match)
            except FhirError as exc:
                if exc.status not in _REFUSED_IDS or if_match:
                    raise
                written, _ = self._upsert_by_identifier(resource)  # raises its own error if that fails too
                log.info(
                    "FHIR server refused client-assigned ids (HTTP %s); using conditional creates", exc.status
                )
                self.write_mode = WRITE_MODE_CONDITIONAL_CREATE
                return written
        return self._upsert_by_identifier(resource)[0]

    def _upsert_by_identifier(self, resource: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """(stored resource, "created" | "unchanged" | "updated") using the server's id for the match."""
        stored, created = self.conditional_create(resource, bundles.first_identifier_query(resource))
        if created:
            return stored, "created"
        if bundles.same_content({**resource, "id": stored["id"]}, stored):
            return stored, "unchanged"
        version = (stored.get("meta") or {}).get("versionId")
        return self.update({**resource, "id": stored["id"]}, if_match=version), "updated"

    def write_mode_for(self, resource_type: str) -> str:
        """``put`` (client-assigned ids) or ``conditional-create`` for servers that refuse them."""
        if self.write_mode is None:
            self.write_mode = WRITE_MODE_PUT
            try:
                statement = self.capabilities()
            except FhirError:
                return self.write_mode
            for rest in statement.get("rest") or ():
                for entry in rest.get("resource") or ():
                    if entry.get("type") == resource_type and entry.get("updateCreate") is False:
                        self.write_mode = WRITE_MODE_CONDITIONAL_CREATE
        return self.write_mode

    def upsert_many(
        self, resources: Sequence[Mapping[str, Any]], skip_unchanged: bool = True
    ) -> UpsertSummary:
        """Write many resources with deterministic ids; unchanged ones are not written at all.

        Existing resources are updated with ``If-Match`` of the version compared against, so a concurrent
        change surfaces as PreconditionFailed instead of being overwritten.
        """
        summary = UpsertSummary()
        if not resources:
            return summary
        by_type: dict[str, list[Mapping[str, Any]]] = {}
        for resource in resources:
            by_type.setdefault(str(resource["resourceType"]), []).append(resource)
        for rtype, group in by_type.items():
            if self.write_mode_for(rtype) != WRITE_MODE_PUT:
                for resource in group:  # rare servers: one request or two per resource
                    _, outcome = self._upsert_by_identifier(resource)
                    setattr(summary, outcome, getattr(summary, outcome) + 1)
                continue
            existing = self.read_many(rtype, bundles.all_ids(group)) if skip_unchanged else {}
            entries, is_new = [], []
            for resource in group:
                current = existing.get(str(resource["id"]))
                if current is not None and bundles.same_content(resource, current):
                    summary.unchanged += 1
                    continue
                version = (current.get("meta") or {}).get("versionId") if current else None
                entries.append(bundles.put_entry(resource, if_match=version))
                is_new.append(current is None)
            for result, new in zip(self.transaction(entries), is_new, strict=True):
                summary.results.append(result)
                if new and result.status == 201:
                    summary.created += 1
                else:
                    summary.updated += 1
        return summary


_RETURN_REPRESENTATION = {"Prefer": "return=representation"}


def _json_or_none(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _repeatable_entry(entry: Mapping[str, Any]) -> bool:
    request = entry.get("request") or {}
    return request.get("method") != "POST" or bool(request.get("ifNoneExist"))


def _has_identifier(resource: Mapping[str, Any], system: str | None, value: str) -> bool:
    identifiers = resource.get("identifier") or []
    if isinstance(identifiers, Mapping):
        identifiers = [identifiers]
    return any(i.get("value") == value and (system is None or i.get("system") == system) for i in identifiers)
