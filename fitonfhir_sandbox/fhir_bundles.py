"""Transaction and batch Bundles for the sandbox FHIR server.

A transaction resolves every entry's identity first (POST ids, conditional matches), rewrites
``urn:uuid`` references to the resolved ``Type/id``, then runs DELETE, POST, PUT, GET in that order in
one SQLite transaction: the first failure rolls everything back and is reported with its entry index.
A batch runs each entry in its own savepoint and reports failures per entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fitonfhir_sandbox.fhir_store import FhirStore, Written
from fitonfhir_sandbox.fhir_validation import FhirProblem, check_id, check_type

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    index: int
    method: str
    rtype: str
    rid: str | None
    vid: str | None
    query: str
    resource: Any
    full_url: str | None
    if_match: str | None
    if_none_exist: str | None
    resolved_id: str | None = None
    existing: dict[str, Any] | None = None


def _parse_entry(index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise FhirProblem(400, "entry must be an object", expression=[where])
    request = raw.get("request")
    if not isinstance(request, dict):
        raise FhirProblem(400, "request is missing", expression=[f"{where}.request"])
    method = str(request.get("method") or "").upper()
    if method not in _ORDER:
        raise FhirProblem(
            400,
            f"request.method {method or None!r} is not one of GET, POST, PUT, DELETE",
            expression=[f"{where}.request.method"],
        )
    url = str(request.get("url") or "")
    if not url or url.startswith(("http://", "https://")):
        raise FhirProblem(
            400,
            f"request.url must be a relative URL like 'Observation/<id>', got {url!r}",
            expression=[f"{where}.request.url"],
        )
    path, _, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    if not segments or len(segments) > 4 or (len(segments) in (3, 4) and segments[2] != "_history"):
        raise FhirProblem(
            400, f"request.url {url!r} is not a supported interaction", expression=[f"{where}.request.url"]
        )
    rtype = segments[0]
    check_type(rtype)
    rid = segments[1] if len(segments) >= 2 else None
    if rid is not None:
        check_id(rid)
    return Entry(
        index=index,
        method=method,
        rtype=rtype,
        rid=rid,
        vid=segments[3] if len(segments) == 4 else None,
        query=query,
        resource=raw.get("resource"),
        full_url=raw.get("fullUrl"),
        if_match=request.get("ifMatch"),
        if_none_exist=request.get("ifNoneExist"),
    )


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    return value


def _written_entry(written: Written, rtype: str, minimal: bool) -> dict[str, Any]:
    resource = written.resource
    version = resource["meta"]["versionId"]
    response = {
        "status": STATUS_TEXT.get(written.status, str(written.status)),
        "location": f"{rtype}/{resource['id']}/_history/{version}",
        "etag": f'W/"{version}"',
        "lastModified": resource["meta"]["lastUpdated"],
    }
    return {"response": response} if minimal else {"response": response, "resource": resource}


def _read_entry(store: FhirStore, entry: Entry) -> dict[str, Any]:
    if entry.rid is None:
        params = parse_qsl(entry.query, keep_blank_values=True)
        found, total, _ = store.search(entry.rtype, params)
        result: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in found],
        }
        if total is not None:
            result["total"] = total
        return {"response": {"status": "200 OK"}, "resource": result}
    resource = (
        store.vread(entry.rtype, entry.rid, entry.vid) if entry.vid else store.read(entry.rtype, entry.rid)
    )
    version = resource["meta"]["versionId"]
    return {"response": {"status": "200 OK", "etag": f'W/"{version}"'}, "resource": resource}


def _run_single(store: FhirStore, entry: Entry, minimal: bool) -> dict[str, Any]:
    """One entry as its own REST interaction (batch semantics)."""
    if entry.method == "GET":
        return _read_entry(store, entry)
    if entry.method == "DELETE":
        if entry.rid is None:
            raise FhirProblem(400, "Conditional delete is not supported", code="not-supported")
        store.delete_in_tx(entry.rtype, entry.rid)
        return {"response": {"status": "204 No Content"}}
    if entry.method == "POST":
        if entry.rid is not None:
            raise FhirProblem(400, f"POST goes to {entry.rtype}, not {entry.rtype}/{entry.rid}")
        return _written_entry(
            store.create_in_tx(entry.rtype, entry.resource, entry.if_none_exist), entry.rtype, minimal
        )
    if entry.rid is None:
        if not entry.query:
            raise FhirProblem(400, f"PUT needs {entry.rtype}/<id> or {entry.rtype}?<search>")
        written = store.conditional_update_in_tx(entry.rtype, entry.query, entry.resource)
    else:
        written = store.update_in_tx(entry.rtype, entry.rid, entry.resource, entry.if_match)
    return _written_entry(written, entry.rtype, minimal)


def _resolve_identities(store: FhirStore, entries: list[Entry]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    seen: set[str] = set()
    for entry in entries:
        if entry.method == "POST":
            found = store.matches(entry.rtype, entry.if_none_exist) if entry.if_none_exist else []
            if len(found) > 1:
                raise FhirProblem(
                    412,
                    f"Bundle.entry[{entry.index}]: ifNoneExist matched {len(found)} {entry.rtype} resources",
                    code="duplicate",
                )
            entry.existing = found[0] if found else None
            entry.resolved_id = found[0]["id"] if found else str(uuid.uuid4())
        elif entry.method == "PUT" and entry.rid is None and entry.query:
            found = store.matches(entry.rtype, entry.query)
            if len(found) > 1:
                raise FhirProblem(
                    412,
                    f"Bundle.entry[{entry.index}]: conditional update matched {len(found)}",
                    code="duplicate",
                )
            own_id = entry.resource.get("id") if isinstance(entry.resource, dict) else None
            entry.existing = found[0] if found else None
            entry.resolved_id = found[0]["id"] if found else (own_id or str(uuid.uuid4()))
        elif entry.method in ("PUT", "DELETE"):
            entry.resolved_id = entry.rid
        if entry.resolved_id is None:
            continue
        reference = f"{entry.rtype}/{entry.resolved_id}"
        if entry.method != "POST" or entry.existing is None:
            if reference in seen:
                raise FhirProblem(
                    400, f"Bundle.entry[{entry.index}]: {reference} is written twice in one transaction"
                )
            seen.add(reference)
        if entry.full_url:
            mapping[entry.full_url] = reference
    return mapping


def _run_transaction_entry(store: FhirStore, entry: Entry, minimal: bool) -> dict[str, Any]:
    if entry.method == "POST":
        if entry.existing is not None:
            return _written_entry(Written(200, entry.existing, changed=False), entry.rtype, minimal)
        written = store.create_in_tx(entry.rtype, entry.resource, new_id=entry.resolved_id)
        return _written_entry(written, entry.rtype, minimal)
    if entry.method == "PUT" and entry.rid is None:
        body = (
            {**entry.resource, "id": entry.resolved_id}
            if isinstance(entry.resource, dict)
            else entry.resource
        )
        if entry.existing is not None or store.update_create:
            return _written_entry(
                store.update_in_tx(entry.rtype, entry.resolved_id or "", body), entry.rtype, minimal
            )
        return _written_entry(
            store.create_in_tx(entry.rtype, body, new_id=entry.resolved_id), entry.rtype, minimal
        )
    return _run_single(store, entry, minimal)


def _plain_reads(raw_entries: list[Any]) -> tuple[str, list[str]] | None:
    """(type, ids) when every entry is a plain ``GET Type/id`` of one type, else None."""
    rtype, ids = None, []
    for raw in raw_entries:
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or str(request.get("method") or "").upper() != "GET":
            return None
        url = str(request.get("url") or "")
        parts = url.split("/")
        if "?" in url or len(parts) != 2 or (rtype is not None and parts[0] != rtype):
            return None
        rtype = parts[0]
        ids.append(parts[1])
    if rtype is None:
        return None
    try:
        check_type(rtype)
        for rid in ids:
            check_id(rid)
    except FhirProblem:
        return None  # the general path reports it per entry
    return rtype, ids


def process_bundle(store: FhirStore, body: Any, minimal: bool = False) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirProblem(400, "POST to the base URL needs a Bundle of type transaction or batch")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirProblem(
            400, f"Bundle.type must be transaction or batch, got {kind!r}", expression=["Bundle.type"]
        )
    raw_entries = body.get("entry") or []
    if not isinstance(raw_entries, list):
        raise FhirProblem(400, "Bundle.entry must be a list", expression=["Bundle.entry"])
    results: list[dict[str, Any] | None] = [None] * len(raw_entries)
    if kind == "transaction":
        entries = []
        for index, raw in enumerate(raw_entries):
            try:
                entries.append(_parse_entry(index, raw))
            except FhirProblem as problem:
                raise problem.with_prefix(f"Bundle.entry[{index}]") from None
        with store.transaction():
            by_type: dict[str, list[str]] = {}
            for entry in entries:
                if entry.method == "PUT" and entry.rid is not None:
                    by_type.setdefault(entry.rtype, []).append(entry.rid)
            for rtype, ids in by_type.items():
                store.prefetch(rtype, ids)  # one query instead of one per entry
            mapping = _resolve_identities(store, entries)
            for entry in entries:
                if mapping and entry.resource is not None:
                    entry.resource = _rewrite(entry.resource, mapping)
            for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
                try:
                    results[entry.index] = _run_transaction_entry(store, entry, minimal)
                except FhirProblem as problem:
                    raise problem.with_prefix(f"Bundle.entry[{entry.index}]") from None
    else:
        reads = _plain_reads(raw_entries)
        if reads is not None:  # a batch of reads by id (read-before-write): one query
            return {"resourceType": "Bundle", "type": "batch-response", "entry": store.read_entries(*reads)}
        with store.transaction():
            for index, raw in enumerate(raw_entries):
                try:
                    with store.savepoint():
                        results[index] = _run_single(store, _parse_entry(index, raw), minimal)
                except FhirProblem as problem:
                    results[index] = {
                        "response": {"status": str(problem.status), "outcome": problem.outcome()}
                    }
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": results}
