"""The users table: one row per onboarded Google account, keyed by an opaque partition key."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from .keys import check_user_key, new_user_key


class UserState(StrEnum):
    ACTIVE = "active"  # importable
    UNAUTHORIZED = "unauthorized"  # Google refused the refresh token (invalid_grant)
    REVOKED = "revoked"  # the patient revoked consent
    ERASED = "erased"  # `fitonfhir users erase`: the data this project wrote about the user is gone


@dataclass(frozen=True)
class User:
    key: str
    google_sub: str
    google_issuer: str
    patient_id: str
    state: UserState
    external_system: str = ""
    external_id: str = ""
    scopes: str = ""
    state_reason: str = ""
    created_at: str = ""
    state_changed_at: str = ""
    # Issue 13: where the user's data comes from. A Fit user who consents to Google Health keeps
    # their key and Patient; ``cutover_day`` (ISO date, "" = none) is the first UTC day read from Health.
    source: str = "google-fit"
    cutover_day: str = ""


GOOGLE_FIT, GOOGLE_HEALTH = "google-fit", "google-health"
SOURCES = (GOOGLE_FIT, GOOGLE_HEALTH)


def check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    return source


def next_source(stored: User | None, requested: str | None, today: date | None = None) -> tuple[str, str]:
    """(source, cutover_day) after an onboarding that asked for ``requested`` (None: keep what is stored).

    Fit -> Health cuts over on the UTC day after consent, so every day before comes from Fit and every
    day from then on from Health: none twice, none skipped. Health never falls back to Fit (its days
    would be imported twice, under other ids), so a Fit consent of a Health user keeps Health.
    """
    if stored is None:
        return check_source(requested or GOOGLE_FIT), ""
    if requested is None or requested == stored.source or check_source(requested) == GOOGLE_FIT:
        return stored.source, stored.cutover_day
    day = (today or datetime.now(UTC).date()) + timedelta(days=1)
    return GOOGLE_HEALTH, day.isoformat()


def source_for_day(user: User, day: str) -> str:
    """The source one UTC day (ISO date) of this user is imported from."""
    if user.source == GOOGLE_HEALTH and (not user.cutover_day or day >= user.cutover_day):
        return GOOGLE_HEALTH
    return GOOGLE_FIT


def check_onboarding(key: str | None, google_sub: str, patient_id: str) -> None:
    """What every backend refuses before it touches a row."""
    if key is not None:
        check_user_key(key)
    if not google_sub or not patient_id:
        raise ValueError("google_sub and patient_id are required to onboard a user")


def reactivated(
    stored: User,
    *,
    google_issuer: str,
    patient_id: str,
    external_system: str,
    external_id: str,
    scopes: str,
    source: str | None,
    now: str,
) -> User:
    """The row of a known Google account onboarding again: active, its key kept, new details merged in
    (empty values keep the stored ones), the source moved on with its cut-over day (:func:`next_source`)."""
    new_source, cutover_day = next_source(stored, source)
    return replace(
        stored,
        source=new_source,
        cutover_day=cutover_day,
        google_issuer=google_issuer,
        patient_id=patient_id,
        state=UserState.ACTIVE,
        external_system=external_system or stored.external_system,
        external_id=external_id or stored.external_id,
        scopes=scopes or stored.scopes,
        state_reason="",
        state_changed_at=now,
    )


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


MAX_LEASE_OWNER = 200  # characters: a Dagster run id is 36


def check_lease(user_key: str, owner: str, ttl_seconds: float | None = None) -> None:
    """What every backend refuses before it touches an import lease."""
    check_user_key(user_key)
    if not isinstance(owner, str) or not owner or len(owner) > MAX_LEASE_OWNER:
        raise ValueError(
            f"an import lease owner is a non-empty string of at most {MAX_LEASE_OWNER} characters"
        )
    if ttl_seconds is not None and not ttl_seconds > 0:
        raise ValueError(f"an import lease needs a positive ttl_seconds, got {ttl_seconds!r}")


class UsersTable(Protocol):
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
        """Insert a new user (fresh key, or ``key`` when given) or re-activate the row of this Google
        account (its existing key wins over ``key``). Passing ``key`` lets the onboarding app store the
        refresh token under the key before the row makes the user importable. ``source`` (None: the
        stored one, or google-fit) follows :func:`next_source`."""
        ...

    def get(self, key: str) -> User | None: ...

    def find_by_google_sub(self, google_sub: str) -> User | None: ...

    def find_by_patient(self, patient_id: str) -> User | None: ...

    def list(self, states: Iterable[UserState] | None = None) -> list[User]: ...

    def set_state(self, key: str, state: UserState, reason: str = "") -> User: ...

    # Import leases (issue 9): at most one run imports a user at a time. A lease is a row of its own
    # (user key, owner, expiry as epoch seconds of the claimer's clock), not a column of the user's row,
    # so renewals never conflict with onboarding or state changes. Each backend claims atomically.

    def claim_import(self, user_key: str, owner: str, ttl_seconds: float) -> bool:
        """Hold the user's import lease for ``ttl_seconds`` from now. Succeeds (True) when nobody holds it,
        the holder's lease expired, or ``owner`` already holds it (a renewal: the expiry moves on);
        False while another owner's lease is live. Atomic: of concurrent claimers exactly one wins."""
        ...

    def release_import(self, user_key: str, owner: str) -> None:
        """Give the lease up, only if ``owner`` holds it (an expired-and-taken-over lease stays the new
        holder's). Releasing a lease one does not hold is a no-op."""
        ...

    def import_holder(self, user_key: str) -> str | None:
        """The owner of the user's live lease, None when unheld or expired (for messages: it may change
        the moment after)."""
        ...


_COLUMNS = (
    "key",
    "google_sub",
    "google_issuer",
    "patient_id",
    "state",
    "external_system",
    "external_id",
    "scopes",
    "state_reason",
    "created_at",
    "state_changed_at",
    "source",
    "cutover_day",
)


_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM users"  # noqa: S608 (fixed column names)
_INSERT = f"INSERT INTO users ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608


class SqliteUsersTable:
    """SQLite users table under FITONFHIR_HOME; every query is parameterised. The database (it links
    Google accounts to patients) is private to the owner: file 0600, new parent directory 0700."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # create the file 0600 before SQLite does (0644): its -wal/-shm files copy the database's mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS users ("
                " key TEXT PRIMARY KEY, google_sub TEXT NOT NULL UNIQUE, google_issuer TEXT NOT NULL,"
                " patient_id TEXT NOT NULL, state TEXT NOT NULL, external_system TEXT NOT NULL DEFAULT '',"
                " external_id TEXT NOT NULL DEFAULT '', scopes TEXT NOT NULL DEFAULT '',"
                " state_reason TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL,"
                " state_changed_at TEXT NOT NULL, source TEXT NOT NULL DEFAULT 'google-fit',"
                " cutover_day TEXT NOT NULL DEFAULT '')"
            )
            db.execute("CREATE INDEX IF NOT EXISTS users_patient ON users(patient_id)")
            # rows from before issue 13 have no source: they are Fit users
            have = {row[1] for row in db.execute("PRAGMA table_info(users)")}
            if "source" not in have:
                db.execute("ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'google-fit'")
            if "cutover_day" not in have:
                db.execute("ALTER TABLE users ADD COLUMN cutover_day TEXT NOT NULL DEFAULT ''")
            # issue 9: databases from before import leases gain the table on their next open
            db.execute(
                "CREATE TABLE IF NOT EXISTS import_leases ("
                " user_key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)"
            )
        self._make_private()

    def _make_private(self) -> None:
        """0600 for the database and, when present, its WAL files (they may predate this version)."""
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(f"{self.path}{suffix}", 0o600)
            except FileNotFoundError:
                continue

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @staticmethod
    def _row(row: tuple | None) -> User | None:
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row, strict=True))
        values["state"] = UserState(values["state"])
        return User(**values)

    def _one(self, where: str, arg: str) -> User | None:
        with self._connect() as db:
            cur = db.execute(f"{_SELECT} WHERE {where} = ?", (arg,))  # noqa: S608 (where is a fixed column name)
            return self._row(cur.fetchone())

    def get(self, key: str) -> User | None:
        return self._one("key", key)

    def find_by_google_sub(self, google_sub: str) -> User | None:
        return self._one("google_sub", google_sub)

    def find_by_patient(self, patient_id: str) -> User | None:
        return self._one("patient_id", patient_id)

    def list(self, states: Iterable[UserState] | None = None) -> list[User]:
        with self._connect() as db:
            rows = db.execute(f"{_SELECT} ORDER BY created_at, key").fetchall()  # noqa: S608
        users = [u for u in (self._row(r) for r in rows) if u is not None]
        if states is not None:
            wanted = set(states)
            users = [u for u in users if u.state in wanted]
        return users

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
        check_onboarding(key, google_sub, patient_id)
        now = utc_now_iso()
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute(f"{_SELECT} WHERE google_sub = ?", (google_sub,))  # noqa: S608
            existing = self._row(cur.fetchone())
            new_source, cutover_day = next_source(existing, source)
            if existing is None:
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
                    source=new_source,
                )
                db.execute(
                    _INSERT,
                    tuple(getattr(user, c) if c != "state" else user.state.value for c in _COLUMNS),
                )
            else:
                user = replace(
                    existing,
                    google_issuer=google_issuer,
                    patient_id=patient_id,
                    state=UserState.ACTIVE,
                    external_system=external_system or existing.external_system,
                    external_id=external_id or existing.external_id,
                    scopes=scopes or existing.scopes,
                    state_reason="",
                    state_changed_at=now,
                    source=new_source,
                    cutover_day=cutover_day,
                )
                db.execute(
                    "UPDATE users SET google_issuer = ?, patient_id = ?, state = ?, external_system = ?,"
                    " external_id = ?, scopes = ?, state_reason = ?, state_changed_at = ?, source = ?,"
                    " cutover_day = ? WHERE key = ?",
                    (
                        user.google_issuer,
                        user.patient_id,
                        user.state.value,
                        user.external_system,
                        user.external_id,
                        user.scopes,
                        user.state_reason,
                        user.state_changed_at,
                        user.source,
                        user.cutover_day,
                        user.key,
                    ),
                )
            db.execute("COMMIT")
        return user

    def set_state(self, key: str, state: UserState, reason: str = "") -> User:
        check_user_key(key)
        now = utc_now_iso()
        with self._lock, self._connect() as db:
            cur = db.execute(
                "UPDATE users SET state = ?, state_reason = ?, state_changed_at = ? WHERE key = ?",
                (UserState(state).value, reason, now, key),
            )
            if cur.rowcount != 1:
                raise KeyError(f"no user with key {key!r}")
        user = self.get(key)
        assert user is not None
        return user

    # -- import leases: one conditional upsert (atomic across threads and processes) ----------------------

    def claim_import(self, user_key: str, owner: str, ttl_seconds: float) -> bool:
        check_lease(user_key, owner, ttl_seconds)
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO import_leases (user_key, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE import_leases.owner = excluded.owner OR import_leases.expires_at <= ?",
                (user_key, owner, now + ttl_seconds, now),
            )
            return cur.rowcount == 1

    def release_import(self, user_key: str, owner: str) -> None:
        check_lease(user_key, owner)
        with self._connect() as db:
            db.execute("DELETE FROM import_leases WHERE user_key = ? AND owner = ?", (user_key, owner))

    def import_holder(self, user_key: str) -> str | None:
        check_user_key(user_key)
        with self._connect() as db:
            row = db.execute(
                "SELECT owner FROM import_leases WHERE user_key = ? AND expires_at > ?",
                (user_key, time.time()),
            ).fetchone()
        return None if row is None else str(row[0])
