"""SQLite persistence of the sandbox FHIR server: versioned resources, history and a search index.

One connection guarded by a lock (the sandbox is a loopback test double, not a database server); every
write and every Bundle runs in one SQLite transaction, so a transaction Bundle is all-or-nothing.
A PUT whose content equals the stored version is a no-op: no new version, same ETag (re-runs are
visibly idempotent), and it is compared before it is validated (stored content was validated when it
was written). Inside a transaction the rows to write are buffered and written with ``executemany`` at
the end (reads of a buffered resource see it; searches flush first), and the current rows of a Bundle's
PUT targets are read with one query (:meth:`FhirStore.prefetch`).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from fitonfhir_dagster.fhir.bundles import content_of
from fitonfhir_sandbox.fhir_search import SearchQuery, build_query, index_rows
from fitonfhir_sandbox.fhir_validation import FhirProblem, check_id, check_type, validate_resource

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, json BLOB, PRIMARY KEY (type, id));
CREATE INDEX IF NOT EXISTS resources_updated ON resources (type, last_updated);
CREATE TABLE IF NOT EXISTS history (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, json BLOB, PRIMARY KEY (type, id, version));
CREATE TABLE IF NOT EXISTS tokens (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_lookup ON tokens (type, param, value);
CREATE INDEX IF NOT EXISTS tokens_owner ON tokens (type, id);
CREATE TABLE IF NOT EXISTS dates (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    start REAL NOT NULL, end_ REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dates_lookup ON dates (type, param, start);
CREATE INDEX IF NOT EXISTS dates_owner ON dates (type, id);
"""

_ETAG = re.compile(r'^\s*(?:W/)?"?([^"]*)"?\s*$')


def now_instant() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_if_match(value: str) -> str:
    match = _ETAG.match(value)
    return match.group(1) if match else value


@dataclass(frozen=True)
class Written:
    """Outcome of a write: HTTP status (201 created, 200 updated/matched), the stored resource, and
    whether a new version was stored."""

    status: int
    resource: dict[str, Any]
    changed: bool


class FhirStore:
    def __init__(self, db_path: Path, *, update_create: bool = True) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.update_create = update_create
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # A committed transaction survives the process being killed (it is in the WAL, in the OS's cache);
        # only a power loss could lose the last ones, which a local stand-in can afford: no fsync per commit.
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.executescript(_SCHEMA)
        # inside ``transaction``: rows known for this transaction (type, id) -> (version, deleted, json)
        self._rows: dict[tuple[str, str], tuple[int, bool, dict[str, Any] | None] | None] | None = None
        self._pending: list[tuple[str, str, int, str, bytes, dict[str, Any]]] = []

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; any exception rolls every write in it back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._rows, self._pending = {}, []
            try:
                yield
                self._flush()
            except BaseException:
                self._pending = []
                self._rows = None
                self._conn.execute("ROLLBACK")
                raise
            self._rows = None
            self._conn.execute("COMMIT")

    def prefetch(self, rtype: str, ids: list[str]) -> None:
        """Read the current rows of ``ids`` with one query per 500 (inside ``transaction``)."""
        if self._rows is None:
            return
        wanted = [i for i in dict.fromkeys(ids) if (rtype, i) not in self._rows]
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            for i in part:
                self._rows[(rtype, i)] = None
            sql = f"SELECT id, version, deleted, json FROM resources WHERE type = ? AND id IN ({','.join('?' * len(part))})"  # noqa: S608
            for rid, version, deleted, blob in self._conn.execute(sql, [rtype, *part]):
                self._rows[(rtype, rid)] = (int(version), bool(deleted), orjson.loads(blob) if blob else None)

    def _flush(self) -> None:
        """Write the buffered rows: resources, history and search index, each with one executemany."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        rows = [(t, i, v, stamp, blob) for t, i, v, stamp, blob, _ in pending]
        self._conn.executemany(
            "INSERT OR REPLACE INTO resources (type, id, version, last_updated, deleted, json) VALUES (?,?,?,?,0,?)",
            rows,
        )
        self._conn.executemany(
            "INSERT INTO history (type, id, version, last_updated, deleted, json) VALUES (?,?,?,?,0,?)", rows
        )
        owners = [(t, i) for t, i, v, *_ in pending if v > 1]  # a first version has no index rows yet
        if owners:
            self._conn.executemany("DELETE FROM tokens WHERE type = ? AND id = ?", owners)
            self._conn.executemany("DELETE FROM dates WHERE type = ? AND id = ?", owners)
        tokens: list[tuple[Any, ...]] = []
        dates: list[tuple[Any, ...]] = []
        for rtype, rid, _, _, _, stored in pending:
            index = index_rows(stored)
            tokens.extend((rtype, rid, p, sy, v) for p, sy, v in index.tokens)
            dates.extend((rtype, rid, p, st, e) for p, st, e in index.dates)
        if tokens:
            self._conn.executemany(
                "INSERT INTO tokens (type, id, param, system, value) VALUES (?,?,?,?,?)", tokens
            )
        if dates:
            self._conn.executemany(
                "INSERT INTO dates (type, id, param, start, end_) VALUES (?,?,?,?,?)", dates
            )

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside ``transaction`` (one batch entry)."""
        self._flush()
        self._conn.execute("SAVEPOINT entry")
        try:
            yield
            self._flush()
        except BaseException:
            self._pending = []
            if self._rows is not None:
                self._rows.clear()  # rows read or written inside the entry may be rolled back
            self._conn.execute("ROLLBACK TO entry")
            self._conn.execute("RELEASE entry")
            raise
        self._conn.execute("RELEASE entry")

    # ------------------------------------------------------------------ reads

    def _row(self, rtype: str, rid: str) -> tuple[int, bool, dict[str, Any] | None] | None:
        if self._rows is not None and (rtype, rid) in self._rows:
            return self._rows[(rtype, rid)]
        row = self._conn.execute(
            "SELECT version, deleted, json FROM resources WHERE type = ? AND id = ?", (rtype, rid)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), bool(row[1]), (orjson.loads(row[2]) if row[2] else None)

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        check_type(rtype)
        check_id(rid)
        with self._lock:
            row = self._row(rtype, rid)
        if row is None:
            raise FhirProblem(404, f"{rtype}/{rid} not found", code="not-found")
        if row[1] or row[2] is None:
            raise FhirProblem(410, f"{rtype}/{rid} was deleted", code="deleted")
        return row[2]

    def read_entries(self, rtype: str, ids: list[str]) -> list[dict[str, Any]]:
        """batch-response entries for ``GET rtype/id`` of each id, read with one query per 500 ids."""
        found: dict[str, tuple[bool, dict[str, Any] | None]] = {}
        unique = list(dict.fromkeys(ids))
        with self._lock:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                sql = f"SELECT id, deleted, json FROM resources WHERE type = ? AND id IN ({','.join('?' * len(part))})"  # noqa: S608
                for rid, deleted, blob in self._conn.execute(sql, [rtype, *part]):
                    found[rid] = (bool(deleted), orjson.loads(blob) if blob else None)
        entries = []
        for rid in ids:
            deleted, resource = found.get(rid, (False, None))
            if resource is None or deleted:
                status, code = ("410", "deleted") if deleted else ("404", "not-found")
                problem = FhirProblem(
                    int(status), f"{rtype}/{rid} {'was deleted' if deleted else 'not found'}", code=code
                )
                entries.append({"response": {"status": status, "outcome": problem.outcome()}})
                continue
            version = resource["meta"]["versionId"]
            entries.append({"response": {"status": "200 OK", "etag": f'W/"{version}"'}, "resource": resource})
        return entries

    def vread(self, rtype: str, rid: str, vid: str) -> dict[str, Any]:
        check_type(rtype)
        check_id(rid)
        with self._lock:
            row = self._conn.execute(
                "SELECT deleted, json FROM history WHERE type = ? AND id = ? AND version = ?",
                (rtype, rid, int(vid) if vid.isdigit() else -1),
            ).fetchone()
        if row is None:
            raise FhirProblem(404, f"{rtype}/{rid}/_history/{vid} not found", code="not-found")
        if row[0]:
            raise FhirProblem(410, f"{rtype}/{rid}/_history/{vid} is a deletion", code="deleted")
        return dict(orjson.loads(row[1]))

    def history(self, rtype: str, rid: str) -> list[dict[str, Any]]:
        """Versions newest first (deletions left out)."""
        check_type(rtype)
        check_id(rid)
        with self._lock:
            rows = self._conn.execute(
                "SELECT json FROM history WHERE type = ? AND id = ? AND deleted = 0 ORDER BY version DESC",
                (rtype, rid),
            ).fetchall()
        if not rows:
            raise FhirProblem(404, f"{rtype}/{rid} not found", code="not-found")
        return [orjson.loads(r[0]) for r in rows]

    def search(
        self, rtype: str, params: list[tuple[str, str]]
    ) -> tuple[list[dict[str, Any]], int | None, SearchQuery]:
        """(page of matches, total or None, the parsed query for paging links)."""
        check_type(rtype)
        query = build_query(params)
        with self._lock:
            return self._search(rtype, query)

    def _search(self, rtype: str, query: SearchQuery) -> tuple[list[dict[str, Any]], int | None, SearchQuery]:
        self._flush()
        where = " AND ".join(query.where)
        args = [rtype, *query.args]
        total = None
        if query.total or query.summary_count:
            count_sql = f"SELECT COUNT(*) FROM resources r WHERE {where}"  # noqa: S608 - fixed fragments only
            total = int(self._conn.execute(count_sql, args).fetchone()[0])
        if query.summary_count or query.count == 0:
            return [], total, query
        date_col = (
            ", (SELECT MIN(d.start) FROM dates d WHERE d.type = r.type AND d.id = r.id AND d.param = 'date')"
            " AS date_start"
            if "date_start" in query.order
            else ""
        )
        sql = (
            f"SELECT r.json{date_col} FROM resources r WHERE {where} "  # noqa: S608 - only fixed SQL fragments
            f"ORDER BY {query.order} LIMIT ? OFFSET ?"
        )
        rows = self._conn.execute(sql, [*args, query.count, query.offset]).fetchall()
        return [orjson.loads(r[0]) for r in rows], total, query

    def matches(self, rtype: str, query_string: str) -> list[dict[str, Any]]:
        params = parse_qsl(query_string.lstrip("?"), keep_blank_values=True)
        if not params:
            raise FhirProblem(400, "A conditional operation needs search parameters")
        query = build_query([*params, ("_count", "2")])
        query.total = False
        return self._search(rtype, query)[0]

    # ------------------------------------------------------------------ writes (call inside transaction)

    def _store(self, rtype: str, rid: str, resource: dict[str, Any], version: int) -> dict[str, Any]:
        stamp = now_instant()
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = stamp
        stored = {**resource, "id": rid, "meta": meta}
        blob = orjson.dumps(stored)
        if self._rows is None:  # outside a transaction (not used by the HTTP app): write through
            with self.transaction():
                self._pending.append((rtype, rid, version, stamp, blob, stored))
            return stored
        self._pending.append((rtype, rid, version, stamp, blob, stored))
        self._rows[(rtype, rid)] = (version, False, stored)
        return stored

    def _reindex(self, rtype: str, rid: str, resource: Mapping[str, Any] | None) -> None:
        self._conn.execute("DELETE FROM tokens WHERE type = ? AND id = ?", (rtype, rid))
        self._conn.execute("DELETE FROM dates WHERE type = ? AND id = ?", (rtype, rid))
        if resource is None:
            return
        rows = index_rows(resource)
        if rows.tokens:
            self._conn.executemany(
                "INSERT INTO tokens (type, id, param, system, value) VALUES (?,?,?,?,?)",
                [(rtype, rid, p, s, v) for p, s, v in rows.tokens],
            )
        if rows.dates:
            self._conn.executemany(
                "INSERT INTO dates (type, id, param, start, end_) VALUES (?,?,?,?,?)",
                [(rtype, rid, p, s, e) for p, s, e in rows.dates],
            )

    def create_in_tx(
        self, rtype: str, body: Any, if_none_exist: str | None = None, new_id: str | None = None
    ) -> Written:
        validate_resource(body, rtype)
        if if_none_exist:
            found = self.matches(rtype, if_none_exist)
            if len(found) > 1:
                raise FhirProblem(
                    412, f"If-None-Exist matched {len(found)} {rtype} resources", code="duplicate"
                )
            if found:
                return Written(200, found[0], changed=False)
        rid = new_id or str(uuid.uuid4())
        return Written(
            201, self._store(rtype, rid, {k: v for k, v in body.items() if k != "id"}, 1), changed=True
        )

    def update_in_tx(self, rtype: str, rid: str, body: Any, if_match: str | None = None) -> Written:
        check_id(rid)
        if not isinstance(body, dict) or body.get("resourceType") != rtype:
            validate_resource(body, rtype)  # raises the precise problem
        if body.get("id") not in (None, rid):
            raise FhirProblem(
                400,
                f"Resource id {body.get('id')!r} does not match the URL id {rid!r}",
                expression=[f"{rtype}.id"],
            )
        row = self._row(rtype, rid)
        live = row is not None and not row[1] and row[2] is not None
        if if_match is not None:
            expected = parse_if_match(if_match)
            if not live or str(row[0]) != expected:  # type: ignore[index]
                current = f'W/"{row[0]}"' if live else "no current version"  # type: ignore[index]
                raise FhirProblem(
                    412, f"If-Match {if_match} does not match {rtype}/{rid} ({current})", code="conflict"
                )
        if not live and not self.update_create:
            raise FhirProblem(
                405,
                f"{rtype}/{rid} does not exist and this server does not allow client-assigned ids; "
                "use POST (with If-None-Exist)",
                code="not-supported",
            )
        if live and content_of(body) == content_of(row[2]):  # type: ignore[index,arg-type]
            return Written(200, row[2], changed=False)  # type: ignore[index,arg-type]
        validate_resource(body, rtype)
        version = row[0] + 1 if row is not None else 1
        return Written(200 if live else 201, self._store(rtype, rid, body, version), changed=True)

    def conditional_update_in_tx(self, rtype: str, query_string: str, body: Any) -> Written:
        validate_resource(body, rtype)
        found = self.matches(rtype, query_string)
        if len(found) > 1:
            raise FhirProblem(
                412, f"Conditional update matched {len(found)} {rtype} resources", code="duplicate"
            )
        if not found:
            if body.get("id"):
                return self.update_in_tx(rtype, body["id"], body)
            return self.create_in_tx(rtype, body)
        existing_id = found[0]["id"]
        if body.get("id") not in (None, existing_id):
            raise FhirProblem(
                400,
                f"Resource id {body.get('id')!r} does not match the matched id {existing_id!r}",
                expression=[f"{rtype}.id"],
            )
        return self.update_in_tx(rtype, existing_id, {**body, "id": existing_id})

    def delete_in_tx(self, rtype: str, rid: str) -> None:
        check_type(rtype)
        check_id(rid)
        self._flush()
        row = self._row(rtype, rid)
        if self._rows is not None:
            self._rows.pop((rtype, rid), None)
        if row is None or row[1]:
            return  # deleting what is not there succeeds (idempotent)
        version, stamp = row[0] + 1, now_instant()
        self._conn.execute(
            "UPDATE resources SET version = ?, last_updated = ?, deleted = 1, json = NULL WHERE type = ? AND id = ?",
            (version, stamp, rtype, rid),
        )
        self._conn.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, json) VALUES (?,?,?,?,1,NULL)",
            (rtype, rid, version, stamp),
        )
        self._reindex(rtype, rid, None)

    # ------------------------------------------------------------------ single-operation wrappers

    def create(self, rtype: str, body: Any, if_none_exist: str | None = None) -> Written:
        check_type(rtype)
        with self.transaction():
            return self.create_in_tx(rtype, body, if_none_exist)

    def update(self, rtype: str, rid: str, body: Any, if_match: str | None = None) -> Written:
        check_type(rtype)
        with self.transaction():
            return self.update_in_tx(rtype, rid, body, if_match)

    def conditional_update(self, rtype: str, query_string: str, body: Any) -> Written:
        check_type(rtype)
        with self.transaction():
            return self.conditional_update_in_tx(rtype, query_string, body)

    def delete(self, rtype: str, rid: str) -> None:
        with self.transaction():
            self.delete_in_tx(rtype, rid)
