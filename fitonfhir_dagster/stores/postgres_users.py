"""The users table on PostgreSQL: a production twin of ``SqliteUsersTable`` and ``AzureUsersTable``.

Chosen by ``FITONFHIR_POSTGRES_URL`` (``postgresql://user:password@host:5432/db?sslmode=require``). The
driver is psycopg2 (``psycopg2-binary``), the one dagster-postgres already brings.

Layout: one table (``users`` unless told otherwise) with the fields of ``User`` as ``TEXT`` columns (the
timestamps keep the exact ISO strings the other backends store), ``google_sub`` ``UNIQUE`` and a ``version``
counter that is the row's ETag.

Concurrency is optimistic, like Azure Tables: a write is ``UPDATE ... WHERE key = %s AND version = %s``. When
no row matched, another writer committed in between: the row is re-read, the intended change is applied again
on top of what is stored and the state is settled by the same rule as on Azure
(:func:`~fitonfhir_dagster.stores.azure_tables.resolve_state_conflict`: the newer ``state_changed_at`` wins, a
tie goes to the more restrictive state). Retries are bounded (:data:`MAX_ATTEMPTS`). Two racing onboardings of
one Google account both end on the same user key (``INSERT ... ON CONFLICT (google_sub) DO NOTHING``).

Import leases (:meth:`PostgresUsersTable.claim_import`) live in a second table, ``<table>_import_leases``
(user key, owner, expiry in epoch seconds of the claimer's clock), created beside the users table. A claim is
one ``INSERT ... ON CONFLICT (user_key) DO UPDATE ... WHERE owner = ours OR expired RETURNING``: PostgreSQL
locks the conflicting row and re-checks the condition on its latest version, so of concurrent claimers exactly
one gets a row back.

Every value is a query parameter; the only identifier (the table name) is checked against a strict pattern
and quoted with ``psycopg2.sql.Identifier``. Thread-safe: each call borrows its own connection from a small
pool. A server restart or failover is survived: a call whose pooled connection was dropped discards the pool's
idle connections and is retried once on a fresh one (tests/stack/test_postgres_restart.py). The URL (it holds the password) is never logged, repr'd or put in an exception.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields, replace
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
from psycopg2 import extensions, sql

from ..settings import ConfigError, Settings
from .azure_tables import MAX_ATTEMPTS, ConcurrentUpdateError, resolve_state_conflict
from .keys import check_user_key, new_user_key
from .users import User, UserState, check_lease, check_onboarding, next_source, reactivated, utc_now_iso

log = logging.getLogger(__name__)

TABLE_NAME = "users"
_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_URL_RE = re.compile(r"^postgres(ql)?://", re.IGNORECASE)
_COLUMNS = tuple(f.name for f in fields(User))
_MUTABLE = tuple(c for c in _COLUMNS if c not in ("key", "google_sub", "created_at"))

__all__ = ["MAX_ATTEMPTS", "TABLE_NAME", "ConcurrentUpdateError", "PostgresUsersTable"]

T = TypeVar("T")


class _Pool:
    """Idle connections kept for reuse; a borrower always has a connection of its own (thread-safe)."""

    def __init__(self, url: str, *, max_idle: int, connect_timeout: int) -> None:
        self._url = url
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def connection(self, *, fresh: bool = False) -> Iterator[Any]:
        conn = None
        if not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = psycopg2.connect(
                self._url, connect_timeout=self._connect_timeout, application_name="fitonfhir-users"
            )
        reusable = False
        try:
            yield conn
            reusable = not conn.closed and conn.status == extensions.STATUS_READY
        finally:
            if reusable:
                with self._lock:
                    if len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()  # after an error: never hand out a connection in an unknown state

    def run(self, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` in one transaction on a borrowed connection. When the server dropped that
        connection (a restart, a failover, an idle timeout: psycopg2 raises OperationalError or InterfaceError
        and marks it closed), it is discarded with every idle one (they share its fate) and the call is retried
        once on a fresh connection. Any other error, or a second drop, propagates. A retried write is safe:
        every write here is conditional (version check, ``ON CONFLICT DO NOTHING``), so one that committed
        before the drop is seen as such by the retry's caller."""
        for attempt in (1, 2):
            with self.connection(fresh=attempt > 1) as conn:
                try:
                    with conn, conn.cursor() as cur:
                        return work(cur)
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    if attempt > 1 or not conn.closed:
                        raise  # not a dropped connection (a query error, a timeout): not ours to retry
            self.close()  # the idle connections went down with the server too
            log.warning("users table: the PostgreSQL connection was dropped; retrying once on a fresh one")
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg2.Error):
                conn.close()


class PostgresUsersTable:
    """``UsersTable`` on PostgreSQL with version-column optimistic concurrency and parameterised queries."""

    def __init__(
        self,
        url: str,
        *,
        table: str = TABLE_NAME,
        clock: Callable[[], str] = utc_now_iso,
        create_table: bool = True,
        max_idle_connections: int = 4,
        connect_timeout: int = 10,
    ) -> None:
        if not isinstance(url, str) or not _URL_RE.match(url):
            # never echo the value: it may be a URL with a password in it
            raise ConfigError("FITONFHIR_POSTGRES_URL must be a postgresql:// URL")
        if not _TABLE_RE.match(table):
            raise ValueError(f"not a valid users table name: {table!r} (expected [a-z_][a-z0-9_]{{0,47}})")
        self.table = table
        self._clock = clock
        self._pool = _Pool(url, max_idle=max_idle_connections, connect_timeout=connect_timeout)
        t = sql.Identifier(table)
        cols = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        self._select = sql.SQL("SELECT {cols}, version FROM {t}").format(cols=cols, t=t)
        self._insert = sql.SQL(
            "INSERT INTO {t} ({cols}) VALUES ({values}) ON CONFLICT (google_sub) DO NOTHING RETURNING key"
        ).format(t=t, cols=cols, values=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)))
        self._update_sql = sql.SQL(
            "UPDATE {t} SET {assignments}, version = version + 1 WHERE key = %s AND version = %s"
        ).format(
            t=t,
            assignments=sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in _MUTABLE),
        )
        leases = sql.Identifier(table + "_import_leases")
        self._claim_sql = sql.SQL(
            "INSERT INTO {l} (user_key, owner, expires_at) VALUES (%s, %s, %s) ON CONFLICT (user_key) DO UPDATE"
            " SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at"
            " WHERE {l}.owner = EXCLUDED.owner OR {l}.expires_at <= %s RETURNING user_key"
        ).format(l=leases)
        self._release_sql = sql.SQL("DELETE FROM {l} WHERE user_key = %s AND owner = %s").format(l=leases)
        self._holder_sql = sql.SQL("SELECT owner FROM {l} WHERE user_key = %s AND expires_at > %s").format(
            l=leases
        )
        if create_table:
            self._create_table()

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresUsersTable:
        """FITONFHIR_POSTGRES_URL. It names only the users table, so it wins over
        FITONFHIR_AZURE_STORAGE_CONNECTION_STRING (which keeps serving the Blob archive); together with
        FITONFHIR_AZURE_TABLES_ENDPOINT, which names only the users table as well, it is ambiguous: an error."""
        if not settings.postgres_url:
            raise ConfigError("the PostgreSQL users table is not configured: set FITONFHIR_POSTGRES_URL")
        if settings.azure_tables_endpoint:
            raise ConfigError(
                "set FITONFHIR_POSTGRES_URL or FITONFHIR_AZURE_TABLES_ENDPOINT for the users table, not both"
            )
        return cls(settings.postgres_url)

    def __repr__(self) -> str:
        return f"PostgresUsersTable(table={self.table!r})"  # no URL: it carries the password

    def close(self) -> None:
        self._pool.close()

    # -- schema ---------------------------------------------------------------------------------------

    def _create_table(self) -> None:
        self._pool.run(self._create_table_in)

    def _create_table_in(self, cur: Any) -> None:
        """The schema, in one transaction (:meth:`_Pool.run`)."""
        t = sql.Identifier(self.table)
        # serialise concurrent first starts: CREATE TABLE IF NOT EXISTS itself can race
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("fitonfhir-users:" + self.table,))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " key TEXT PRIMARY KEY, google_sub TEXT NOT NULL UNIQUE, google_issuer TEXT NOT NULL,"
                " patient_id TEXT NOT NULL,"
                " state TEXT NOT NULL CHECK (state IN ('active', 'unauthorized', 'revoked', 'erased')),"
                " external_system TEXT NOT NULL DEFAULT '', external_id TEXT NOT NULL DEFAULT '',"
                " scopes TEXT NOT NULL DEFAULT '', state_reason TEXT NOT NULL DEFAULT '',"
                " created_at TEXT NOT NULL, state_changed_at TEXT NOT NULL,"
                " version BIGINT NOT NULL DEFAULT 1)"
            ).format(t=t)
        )
        self._allow_every_state(cur)  # erasure (issue 12): tables created before `erased` existed
        # tables from before issue 13: their rows are Fit users
        cur.execute(
            sql.SQL(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS source TEXT NOT NULL DEFAULT 'google-fit',"
                " ADD COLUMN IF NOT EXISTS cutover_day TEXT NOT NULL DEFAULT ''"
            ).format(t=t)
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (patient_id)").format(
                i=sql.Identifier(self.table + "_patient"), t=t
            )
        )
        # issue 9: import leases; tables from before them gain it on the next start
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {l} ("
                " user_key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)"
            ).format(l=sql.Identifier(self.table + "_import_leases"))
        )

    def _allow_every_state(self, cur: Any) -> None:
        """Widen the state CHECK of an older table to every ``UserState`` (only when it lacks one)."""
        name = self.table + "_state_check"  # PostgreSQL's name for the inline CHECK of column state
        cur.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s",
            (sql.Identifier(self.table).as_string(cur), name),
        )
        row = cur.fetchone()
        if row is not None and all(f"'{s.value}'" in row[0] for s in UserState):
            return
        states = sql.SQL(", ").join(sql.Literal(s.value) for s in UserState)
        cur.execute(
            sql.SQL(
                "ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {c}, ADD CONSTRAINT {c} CHECK (state IN ({s}))"
            ).format(t=sql.Identifier(self.table), c=sql.Identifier(name), s=states)
        )

    # -- mapping --------------------------------------------------------------------------------------

    @staticmethod
    def _user(row: tuple) -> tuple[User, int]:
        values: dict[str, Any] = dict(zip(_COLUMNS, row[:-1], strict=True))
        values["state"] = UserState(values["state"])
        return User(**values), int(row[-1])

    @staticmethod
    def _values(user: User, columns: Iterable[str]) -> list[str]:
        return [
            user.state.value if c == "state" else getattr(user, c)  # StrEnum -> plain text
            for c in columns
        ]

    def _fetch(self, column: str, value: str) -> tuple[User, int] | None:
        query = sql.SQL("{select} WHERE {col} = %s ORDER BY created_at, key LIMIT 1").format(
            select=self._select, col=sql.Identifier(column)
        )

        def fetch(cur: Any) -> tuple | None:
            cur.execute(query, (str(value),))
            return cur.fetchone()  # type: ignore[no-any-return]

        row = self._pool.run(fetch)
        return None if row is None else self._user(row)

    # -- reads ----------------------------------------------------------------------------------------

    def get(self, key: str) -> User | None:
        found = self._fetch("key", key)
        return None if found is None else found[0]

    def find_by_google_sub(self, google_sub: str) -> User | None:
        found = self._fetch("google_sub", google_sub)
        return None if found is None else found[0]

    def find_by_patient(self, patient_id: str) -> User | None:
        found = self._fetch("patient_id", patient_id)
        return None if found is None else found[0]

    def list(self, states: Iterable[UserState] | None = None) -> list[User]:
        if states is None:
            query, args = sql.SQL("{select} ORDER BY created_at, key").format(select=self._select), ()
        else:
            wanted = sorted({UserState(s).value for s in states})
            if not wanted:
                return []
            query = sql.SQL("{select} WHERE state = ANY(%s) ORDER BY created_at, key").format(
                select=self._select
            )
            args = (wanted,)  # type: ignore[assignment]

        def fetch_all(cur: Any) -> list[tuple]:
            cur.execute(query, args)
            return cur.fetchall()  # type: ignore[no-any-return]

        rows = self._pool.run(fetch_all)
        return [self._user(r)[0] for r in rows]

    # -- writes ---------------------------------------------------------------------------------------

    def _write_if_unchanged(self, user: User, version: int) -> bool:
        """The conditional update (the ETag check): False when the row is no longer at ``version``."""

        def write(cur: Any) -> bool:
            cur.execute(self._update_sql, [*self._values(user, _MUTABLE), user.key, version])
            return cur.rowcount == 1  # type: ignore[no-any-return]

        return self._pool.run(write)

    def _update(
        self, key: str, change: Callable[[User], User], current: tuple[User, int] | None = None
    ) -> User:
        """Apply ``change`` to the stored row at its version; on a conflict re-read, re-apply, settle, retry."""
        conflicted = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if current is None:
                current = self._fetch("key", key)
                if current is None:
                    raise KeyError(f"no user with key {key!r}")
            stored, version = current
            desired = change(stored)
            if conflicted:
                desired = resolve_state_conflict(desired, stored)
            if desired == stored:
                return stored
            if self._write_if_unchanged(desired, version):
                return desired
            log.warning(
                "users row %s changed concurrently (version %d is gone); re-reading and merging"
                " (attempt %d of %d)",
                key,
                version,
                attempt,
                MAX_ATTEMPTS,
            )
            conflicted, current = True, None
        raise ConcurrentUpdateError(f"users row {key} kept changing; gave up after {MAX_ATTEMPTS} attempts")

    def _inserter(self, user: User) -> Callable[[Any], bool]:
        def insert(cur: Any) -> bool:
            cur.execute(self._insert, self._values(user, _COLUMNS))
            return cur.fetchone() is not None

        return insert

    def set_state(self, key: str, state: UserState, reason: str = "") -> User:
        check_user_key(key)
        state = UserState(state)
        now = self._clock()
        return self._update(
            key, lambda stored: replace(stored, state=state, state_reason=reason, state_changed_at=now)
        )

    def upsert_onboarded(
        self,
        *,
        google_sub: str,
        google_issuer: str,
        patient_id: str,
        external_system: str = "",
        external_id: str = "",
        scopes: str = "",
        key: str | None = None,
        source: str | None = None,
    ) -> User:
        """New account: a row under ``key`` (or a fresh key). Known account: its key is kept (``key`` is
        ignored) and the row is re-activated."""
        check_onboarding(key, google_sub, patient_id)
        now = self._clock()

        def reactivate(stored: User) -> User:
            return reactivated(
                stored,
                google_issuer=google_issuer,
                patient_id=patient_id,
                external_system=external_system,
                external_id=external_id,
                scopes=scopes,
                source=source,
                now=now,
            )

        for _ in range(MAX_ATTEMPTS):
            current = self._fetch("google_sub", google_sub)
            if current is not None:
                return self._update(current[0].key, reactivate, current)
            user = User(
                key=key or new_user_key(),
                google_sub=google_sub,
                google_issuer=google_issuer,
                patient_id=patient_id,
                state=UserState.ACTIVE,
                external_system=external_system,
                external_id=external_id,
                scopes=scopes,
                created_at=now,
                state_changed_at=now,
                source=next_source(None, source)[0],
            )
            try:
                inserted = self._pool.run(self._inserter(user))
            except psycopg2.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != f"{self.table}_pkey":
                    raise
                if key is not None:
                    raise ValueError(f"user key {key} already belongs to another Google account") from None
                continue  # a fresh random key collided: draw another
            if inserted:
                return user
            # a concurrent onboarding of the same account inserted first: re-read and re-activate its row
        raise ConcurrentUpdateError(f"onboarding kept racing; gave up after {MAX_ATTEMPTS} attempts")

    # -- import leases ---------------------------------------------------------------------------------

    def claim_import(self, user_key: str, owner: str, ttl_seconds: float) -> bool:
        check_lease(user_key, owner, ttl_seconds)
        now = time.time()

        def claim(cur: Any) -> bool:
            cur.execute(self._claim_sql, (user_key, owner, now + ttl_seconds, now))
            return cur.fetchone() is not None

        return self._pool.run(claim)

    def release_import(self, user_key: str, owner: str) -> None:
        check_lease(user_key, owner)

        def release(cur: Any) -> None:
            cur.execute(self._release_sql, (user_key, owner))

        self._pool.run(release)

    def import_holder(self, user_key: str) -> str | None:
        check_user_key(user_key)

        def holder(cur: Any) -> tuple | None:
            cur.execute(self._holder_sql, (user_key, time.time()))
            return cur.fetchone()  # type: ignore[no-any-return]

        row = self._pool.run(holder)
        return None if row is None else str(row[0])
