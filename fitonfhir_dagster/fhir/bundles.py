"""Building transaction/batch Bundle entries and reading their responses; plain dicts for speed."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

_ETAG_VERSION = re.compile(r'^(?:W/)?"([^"]+)"$')
_HISTORY_VERSION = re.compile(r"/_history/([^/?#]+)")


def escape_search_value(value: str) -> str:
    """FHIR search escaping of ``\\`` and ``,`` (the OR separator), as servers read them back."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def identifier_token(system: str | None, value: str) -> str:
    """The ``identifier`` search value ``<system>|<value>`` (escaped; any system when None)."""
    escaped = escape_search_value(value)
    return f"{escape_search_value(system)}|{escaped}" if system else escaped


def identifier_query(system: str | None, value: str) -> str:
    """``identifier=<system>|<value>`` URL-encoded for a query string or an If-None-Exist header."""
    return "identifier=" + quote(identifier_token(system, value), safe="")


def encode_query(query: str | Mapping[str, Any]) -> str:
    """A mapping becomes an encoded query string; a string is taken as already encoded."""
    if isinstance(query, str):
        return query.lstrip("?")
    return urlencode(
        [(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list | tuple) else [vs])]
    )


def first_identifier_query(resource: Mapping[str, Any]) -> str:
    """The identifier search that finds ``resource`` again; needed when the server picks ids."""
    identifiers = resource.get("identifier") or []
    if isinstance(identifiers, Mapping):
        identifiers = [identifiers]
    for ident in identifiers:
        if ident.get("value"):
            return identifier_query(ident.get("system"), ident["value"])
    raise ValueError(
        f"{resource.get('resourceType')}/{resource.get('id')} has no identifier value; "
        "a server that assigns ids needs one to make the write idempotent"
    )


def etag_for(version_id: str) -> str:
    return f'W/"{version_id}"'


def version_from_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    match = _ETAG_VERSION.match(etag.strip())
    return match.group(1) if match else None


def _type_and_id(resource: Mapping[str, Any]) -> tuple[str, str]:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if not rtype or not rid:
        raise ValueError(f"a PUT needs resourceType and id, got resourceType={rtype!r} id={rid!r}")
    return str(rtype), str(rid)


def put_entry(resource: Mapping[str, Any], if_match: str | None = None) -> dict[str, Any]:
    """Update-as-create with the resource's own (deterministic) id; ``if_match`` is a versionId."""
    rtype, rid = _type_and_id(resource)
    request: dict[str, Any] = {"method": "PUT", "url": f"{rtype}/{rid}"}
    if if_match:
        request["ifMatch"] = etag_for(if_match)
    return {"resource": dict(resource), "request": request}


def post_entry(
    resource: Mapping[str, Any],
    if_none_exist: str | Mapping[str, Any] | None = None,
    full_url: str | None = None,
) -> dict[str, Any]:
    """Create with a server-assigned id; ``if_none_exist`` makes it a conditional create."""
    body = {k: v for k, v in resource.items() if k != "id"}
    request: dict[str, Any] = {"method": "POST", "url": str(resource["resourceType"])}
    if if_none_exist:
        request["ifNoneExist"] = encode_query(if_none_exist)
    return {"fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}", "resource": body, "request": request}


def conditional_put_entry(resource: Mapping[str, Any], query: str | Mapping[str, Any]) -> dict[str, Any]:
    """``PUT <type>?<query>``: update the single match or create when none."""
    request = {"method": "PUT", "url": f"{resource['resourceType']}?{encode_query(query)}"}
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": dict(resource), "request": request}


def delete_entry(resource_type: str, resource_id: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": f"{resource_type}/{resource_id}"}}


def bundle(kind: str, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if kind not in ("transaction", "batch"):
        raise ValueError(f"bundle type must be transaction or batch, got {kind!r}")
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


_VOLATILE_META = ("versionId", "lastUpdated")


def content_of(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource without server-managed meta (versionId, lastUpdated): what a write changes."""
    body = dict(resource)
    meta = body.get("meta")
    if isinstance(meta, Mapping):
        rest = {k: v for k, v in meta.items() if k not in _VOLATILE_META}
        if rest:
            body["meta"] = rest
        else:
            body.pop("meta")
    return body


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when writing ``a`` over ``b`` would change nothing (numbers compare numerically)."""
    return content_of(a) == content_of(b)


@dataclass(frozen=True)
class EntryResult:
    """One ``transaction-response``/``batch-response`` entry, normalised across servers."""

    status: int
    location: str | None
    etag: str | None
    resource: dict[str, Any] | None
    outcome: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def created(self) -> bool:
        return self.status == 201

    @property
    def version_id(self) -> str | None:
        """From the ETag, else the resource's meta, else a ``/_history/<v>`` location."""
        from_etag = version_from_etag(self.etag)
        if from_etag:
            return from_etag
        if self.resource and (self.resource.get("meta") or {}).get("versionId"):
            return str(self.resource["meta"]["versionId"])
        match = _HISTORY_VERSION.search(self.location or "")
        return match.group(1) if match else None

    @property
    def resource_id(self) -> str | None:
        if self.resource and self.resource.get("id"):
            return str(self.resource["id"])
        if self.location:
            parts = self.location.split("/_history/")[0].rstrip("/").split("/")
            return parts[-1] if len(parts) >= 2 else None
        return None


def parse_status(text: Any) -> int:
    """``"201 Created"``, ``"201"`` and ``201`` all mean 201; anything else is a server bug (-> 0)."""
    match = re.match(r"\s*(\d{3})", str(text or ""))
    return int(match.group(1)) if match else 0


def entry_results(response_bundle: Mapping[str, Any]) -> list[EntryResult]:
    results = []
    for entry in response_bundle.get("entry") or ():
        response = entry.get("response") or {}
        outcome = response.get("outcome")
        resource = entry.get("resource")
        if (
            outcome is None
            and isinstance(resource, Mapping)
            and resource.get("resourceType") == "OperationOutcome"
        ):
            outcome, resource = resource, None
        results.append(
            EntryResult(
                status=parse_status(response.get("status")),
                location=response.get("location"),
                etag=response.get("etag"),
                resource=dict(resource) if resource else None,
                outcome=dict(outcome) if outcome else None,
            )
        )
    return results


def resources_of(search_bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Matches of a searchset (``search.mode`` include/outcome entries left out)."""
    found = []
    for entry in search_bundle.get("entry") or ():
        mode = (entry.get("search") or {}).get("mode", "match")
        if mode == "match" and entry.get("resource"):
            found.append(entry["resource"])
    return found


def next_link(search_bundle: Mapping[str, Any]) -> str | None:
    for link in search_bundle.get("link") or ():
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def all_ids(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    return [str(r["id"]) for r in resources if r.get("id")]
