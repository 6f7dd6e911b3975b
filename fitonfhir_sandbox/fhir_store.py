"""SQLite persistence of the sandbox FHIR server: versioned resources, history and a search index.

Laid out so that a write touches few pages, since an import writes each Observation once and the cost
of a commit is the pages it dirties: the current version lives only in ``resources`` (``history`` keeps
superseded versions), and the index rows point at their resource by its row number ``n``, which grows
with every new resource, so the index on it is written at its end rather than at a random page. Only
the ``(type, id)`` key and unique token values land at random pages. A database of the earlier layout
(index rows keyed by ``(type, id)``, every version in ``history``) is converted in place when opened.

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
from collections.abc import Iterator
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

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    n INTEGER PRIMARY KEY, type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
    last_updated TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, json BLOB, UNIQUE (type, id));
CREATE INDEX IF NOT EXISTS resources_updated ON resources (type, last_updated);
CREATE TABLE IF NOT EXISTS history (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, json BLOB, PRIMARY KEY (type, id, version));
CREATE TABLE IF NOT EXISTS tokens (owner INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_lookup ON tokens (param, value);
CREATE INDEX IF NOT EXISTS tokens_owner ON tokens (owner);
CREATE TABLE IF NOT EXISTS dates (owner INTEGER NOT NULL, param TEXT NOT NULL, start REAL NOT NULL, end_ REAL NOT NULL);
CREATE INDEX IF NOT EXISTS dates_lookup ON dates (param, start);
CREATE INDEX IF NOT EXISTS dates_owner ON dates (owner, param, start);
"""

# The first layout (no user_version): the same data, index rows keyed by (type, id), every version in history.
# Converting it: set its tables aside, create this layout, copy, drop what was set aside.
_SET_FIRST_LAYOUT_ASIDE = """
ALTER TABLE resources RENAME TO resources_v1;
ALTER TABLE tokens RENAME TO tokens_v1;
ALTER TABLE dates RENAME TO dates_v1;
DROP INDEX IF EXISTS resources_updated;
DROP INDEX IF EXISTS tokens_lookup;
DROP INDEX IF EXISTS tokens_owner;
DROP INDEX IF EXISTS dates_lookup;
DROP INDEX IF EXISTS dates_owner;
"""
_COPY_FIRST_LAYOUT = """
INSERT INTO resources (type, id, version, last_updated, deleted, json)
    SELECT type, id, version, last_updated, deleted, json FROM resources_v1 ORDER BY rowid;
DELETE FROM history WHERE EXISTS (SELECT 1 FROM resources r
    WHERE r.type = history.type AND r.id = history.id AND r.version = history.version);
INSERT INTO tokens (owner, param, system, value)
    SELECT r.n, t.param, t.system, t.value FROM tokens_v1 t JOIN resources r ON r.type = t.type AND r.id = t.id;
INSERT INTO dates (owner, param, start, end_)
    SELECT r.n, d.param, d.start, d.end_ FROM dates_v1 d JOIN resources r ON r.type = d.type AND r.id = d.id;
DROP TABLE resources_v1;
DROP TABLE tokens_v1;
DROP TABLE dates_v1;
"""

_ETAG = re.compile(r'^\s*(?:W/)?"?([^"]*)"?\s*$')


def now_instant() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def parse_if_match(value: str) -> str:
    match = _ETAG.match(value)
    return match.group(1) if match else value


@dataclass(frozen=True)
class _Row:
    """A resource's current row: its row number, version, whether it is a deletion, its JSON."""

    n: int
    version: int
    deleted: bool
    resource: dict[str, Any] | None

    @property
    def current(self) -> dict[str, Any] | None:
        """The live version; None when the resource is deleted."""
        return None if self.deleted else self.resource


@dataclass(frozen=True)
class _Pending:
    """A version to write at the next flush; ``new`` when the resource has no row yet."""

    row: _Row
    rtype: str
    rid: str
    stamp: str
    blob: bytes
    new: bool


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
        self._open_schema(db_path)
        # inside ``transaction``: rows known for this transaction, (type, id) -> its row or None
        self._rows: dict[tuple[str, str], _Row | None] | None = None
        self._pending: list[_Pending] = []
        self._next_n: int | None = None  # the row number of the next new resource (inside ``transaction``)

    def _open_schema(self, db_path: Path) -> None:
        """Create the layout, or convert one of the first layout; the version is read inside the write
        transaction, so two processes opening one database convert it once."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"The sandbox FHIR database {db_path} has layout {version}, newer than this version's "
                    f"{SCHEMA_VERSION}; use the version that wrote it, or another sandbox home"
                )
            if version < SCHEMA_VERSION:
                first_layout = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tokens'"
                ).fetchone()
                script = _SET_FIRST_LAYOUT_ASIDE + _SCHEMA + _COPY_FIRST_LAYOUT if first_layout else _SCHEMA
                for statement in script.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; any exception rolls every write in it back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._rows, self._pending, self._next_n = {}, [], None
            try:
                yield
                self._flush()
            except BaseException:
                self._pending = []
                self._rows = self._next_n = None
                self._conn.execute("ROLLBACK")
                raise
            self._rows = self._next_n = None
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
            sql = f"SELECT id, n, version, deleted, json FROM resources WHERE type = ? AND id IN ({','.join('?' * len(part))})"  # noqa: S608
            for rid, n, version, deleted, blob in self._conn.execute(sql, [rtype, *part]):
                self._rows[(rtype, rid)] = _Row(
                    n, version, bool(deleted), orjson.loads(blob) if blob else None
                )

    def _flush(self) -> None:
        """Write the buffered versions: new resources with one executemany per table, then the updates in
        the order they were made (a superseded version moves to ``history``, its index rows go)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        new = [p for p in pending if p.new]
        if new:
            self._conn.executemany(
                "INSERT INTO resources (n, type, id, version, last_updated, deleted, json) VALUES (?,?,?,?,?,0,?)",
                [(p.row.n, p.rtype, p.rid, p.row.version, p.stamp, p.blob) for p in new],
            )
            self._index(new)
        for p in pending:
            if p.new:
                continue
            self._supersede(p.row.n)
            self._conn.execute(
                "UPDATE resources SET version = ?, last_updated = ?, deleted = 0, json = ? WHERE n = ?",
                (p.row.version, p.stamp, p.blob, p.row.n),
            )
            self._index([p])

    def _supersede(self, n: int) -> None:
        """Move the current version of resource ``n`` to ``history`` and drop its index rows."""
        self._conn.execute(
            "INSERT INTO history (type, id, version, last_updated, deleted, json)"
            " SELECT type, id, version, last_updated, deleted, json FROM resources WHERE n = ?",
            (n,),
        )
        self._conn.execute("DELETE FROM tokens WHERE owner = ?", (n,))
        self._conn.execute("DELETE FROM dates WHERE owner = ?", (n,))

    def _index(self, written: list[_Pending]) -> None:
        tokens: list[tuple[Any, ...]] = []
        dates: list[tuple[Any, ...]] = []
        for p in written:
            assert p.row.resource is not None
            index = index_rows(p.row.resource)
            tokens.extend((p.row.n, param, system, value) for param, system, value in index.tokens)
            dates.extend((p.row.n, param, start, end) for param, start, end in index.dates)
        if tokens:
            self._conn.executemany(
                "INSERT INTO tokens (owner, param, system, value) VALUES (?,?,?,?)", tokens
            )
        if dates:
            self._conn.executemany("INSERT INTO dates (owner, param, start, end_) VALUES (?,?,?,?)", dates)

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

    def _row(self, rtype: str, rid: str) -> _Row | None:
        if self._rows is not None and (rtype, rid) in self._rows:
            return self._rows[(rtype, rid)]
        row = self._conn.execute(
            "SELECT n, version, deleted, json FROM resources WHERE type = ? AND id = ?", (rtype, rid)
        ).fetchone()
        if row is None:
            return None
        return _Row(row[0], row[1], bool(row[2]), orjson.loads(row[3]) if row[3] else None)

    def read(self, rtype: str, rid: str) -> dict[str, Any]:
        check_type(rtype)
        check_id(rid)
        with self._lock:
            row = self._row(rtype, rid)
        if row is None:
            raise FhirProblem(404, f"{rtype}/{rid} not found", code="not-found")
        if row.current is None:
            raise FhirProblem(410, f"{rtype}/{rid} was deleted", code="deleted")
        return row.current

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
            key = (rtype, rid, int(vid) if vid.isdigit() else -1)
            row = self._conn.execute(
                "SELECT deleted, json FROM resources WHERE type = ? AND id = ? AND version = ?"
                " UNION ALL SELECT deleted, json FROM history WHERE type = ? AND id = ? AND version = ?",
                key + key,
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
                "SELECT version, json FROM resources WHERE type = ? AND id = ? AND deleted = 0"
                " UNION ALL SELECT version, json FROM history WHERE type = ? AND id = ? AND deleted = 0"
                " ORDER BY version DESC",
                (rtype, rid, rtype, rid),
            ).fetchall()
        if not rows:
            raise FhirProblem(404, f"{rtype}/{rid} not found", code="not-found")
        return [orjson.loads(r[1]) for r in rows]

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
            ", (SELECT MIN(d.start) FROM dates d WHERE d.owner = r.n AND d.param = 'date') AS date_start"
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

    def _store(self, rtype: str, rid: str, resource: dict[str, Any], current: _Row | None) -> dict[str, Any]:
        """Buffer the next version of ``rtype/rid``; ``current`` is its row, as the caller read it."""
        if self._rows is None:  # outside a transaction (not used by the HTTP app): write through
            with self.transaction():
                return self._store(rtype, rid, resource, current)
        version = current.version + 1 if current is not None else 1
        stamp = now_instant()
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = stamp
        stored = {**resource, "id": rid, "meta": meta}
        if current is None:
            if self._next_n is None:
                self._next_n = int(
                    self._conn.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM resources").fetchone()[0]
                )
            n, self._next_n = self._next_n, self._next_n + 1
        else:
            n = current.n
        row = _Row(n, version, False, stored)
        self._pending.append(_Pending(row, rtype, rid, stamp, orjson.dumps(stored), new=current is None))
        self._rows[(rtype, rid)] = row
        return stored

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
        current = self._row(rtype, rid) if new_id else None  # a Bundle's resolved id may name a stored row
        return Written(
            201, self._store(rtype, rid, {k: v for k, v in body.items() if k != "id"}, current), changed=True
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
        stored = row.current if row is not None else None
        live_version = row.version if row is not None and stored is not None else None
        if if_match is not None:
            expected = parse_if_match(if_match)
            if live_version is None or str(live_version) != expected:
                current = f'W/"{live_version}"' if live_version is not None else "no current version"
                raise FhirProblem(
                    412, f"If-Match {if_match} does not match {rtype}/{rid} ({current})", code="conflict"
                )
        if stored is None and not self.update_create:
            raise FhirProblem(
                405,
                f"{rtype}/{rid} does not exist and this server does not allow client-assigned ids; "
                "use POST (with If-None-Exist)",
                code="not-supported",
            )
        if stored is not None and content_of(body) == content_of(stored):
            return Written(200, stored, changed=False)
        validate_resource(body, rtype)
        return Written(200 if stored is not None else 201, self._store(rtype, rid, body, row), changed=True)

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
        if row is None or row.deleted:
            return  # deleting what is not there succeeds (idempotent)
        self._supersede(row.n)
        self._conn.execute(
            "UPDATE resources SET version = ?, last_updated = ?, deleted = 1, json = NULL WHERE n = ?",
            (row.version + 1, now_instant(), row.n),
        )

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
