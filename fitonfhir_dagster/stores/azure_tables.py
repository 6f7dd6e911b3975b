"""The users table on Azure Table Storage: the production twin of ``SqliteUsersTable``.

Layout of table ``users`` (one partition per entity kind, like the original):

* ``PartitionKey="users"``, ``RowKey=<user key>``: the user's columns (the fields of ``User``).
* ``PartitionKey="by-sub"``, ``RowKey=sha256(google_sub)``, ``user_key``: claims a Google account. It is
  created with ``create_entity`` *before* the user row, so two racing onboardings of one account conflict
  (HTTP 409) and both end up with the same user key.
* ``PartitionKey="import-lease"``, ``RowKey=<user key>``, ``owner``, ``expires_at`` (epoch seconds of the
  claimer's clock): the user's import lease (:meth:`AzureUsersTable.claim_import`). A free lease is taken
  with ``create_entity`` (409: someone was first), a held one is renewed or taken over with an ETag
  ``If-Match`` replace (412: someone was first), so of concurrent claimers exactly one wins.

Writes use the entity ETag (``MatchConditions.IfNotModified``). On HTTP 412 the row is re-read, the intended
change is applied again on top of what is stored, and the state is settled by :func:`resolve_state_conflict`:

    The newer ``state_changed_at`` wins; on a tie the more restrictive state wins
    (revoked > unauthorized > active).

So a revoke or an ``unauthorized`` mark is never lost to a concurrent re-activation unless that
re-activation was decided strictly later. Retries are bounded (:data:`MAX_ATTEMPTS`).
The rule applies only to real conflicts: an update that sees no 412 was decided on the latest row.

Every lookup is a parameterised OData filter; no user value is ever spliced into a filter string.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from ..settings import ConfigError, Settings
from .keys import USER_KEY_RE, check_user_key, new_user_key
from .users import (
    GOOGLE_FIT,
    User,
    UserState,
    check_lease,
    check_onboarding,
    next_source,
    reactivated,
    utc_now_iso,
)

log = logging.getLogger(__name__)

TABLE_NAME = "users"
USERS_PARTITION = "users"
BY_SUB_PARTITION = "by-sub"
LEASE_PARTITION = "import-lease"
MAX_ATTEMPTS = 8

_USER_COLUMNS = tuple(f.name for f in fields(User) if f.name != "key")
_RESTRICTIVENESS = {UserState.ACTIVE: 0, UserState.UNAUTHORIZED: 1, UserState.REVOKED: 2, UserState.ERASED: 3}


class ConcurrentUpdateError(RuntimeError):
    """A row kept changing under us for MAX_ATTEMPTS attempts."""


def _when(user: User) -> datetime:
    return datetime.fromisoformat(user.state_changed_at) if user.state_changed_at else datetime.min


def resolve_state_conflict(ours: User, stored: User) -> User:
    """Settle the state of ``ours`` (our intended row) against a concurrently ``stored`` row.

    Newer ``state_changed_at`` wins; on a tie the more restrictive state wins. Only the state fields
    (state, state_reason, state_changed_at) are decided here; the other fields of ``ours`` are kept.
    """
    ours_when, stored_when = _when(ours), _when(stored)
    ours_wins = ours_when > stored_when or (
        ours_when == stored_when and _RESTRICTIVENESS[ours.state] >= _RESTRICTIVENESS[stored.state]
    )
    if ours_wins:
        return ours
    return replace(
        ours, state=stored.state, state_reason=stored.state_reason, state_changed_at=stored.state_changed_at
    )


def sub_index_key(google_sub: str) -> str:
    """Row key of the ``by-sub`` claim: a hash, so any sub is a valid RowKey and no raw sub is a key."""
    return hashlib.sha256(google_sub.encode("utf-8")).hexdigest()


def _is_precondition_failed(exc: HttpResponseError) -> bool:
    return isinstance(exc, ResourceModifiedError) or exc.status_code == 412


class AzureUsersTable:
    """``UsersTable`` on Azure Table Storage (or Azurite), with ETag concurrency and parameterised queries."""

    def __init__(
        self, table: TableClient, *, clock: Callable[[], str] = utc_now_iso, create_table: bool = True
    ) -> None:
        self.table = table
        self._clock = clock
        if create_table:
            with contextlib.suppress(ResourceExistsError):
                table.create_table()

    @classmethod
    def from_connection_string(cls, connection_string: str, table_name: str = TABLE_NAME) -> AzureUsersTable:
        return cls(TableClient.from_connection_string(connection_string, table_name=table_name))

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureUsersTable:
        """FITONFHIR_AZURE_STORAGE_CONNECTION_STRING, else FITONFHIR_AZURE_TABLES_ENDPOINT + DefaultAzureCredential."""
        if settings.azure_storage_connection_string:
            return cls.from_connection_string(settings.azure_storage_connection_string)
        if not settings.azure_tables_endpoint:
            raise ConfigError(
                "Azure Tables is not configured: set FITONFHIR_AZURE_STORAGE_CONNECTION_STRING "
                "or FITONFHIR_AZURE_TABLES_ENDPOINT"
            )
        from azure.identity import DefaultAzureCredential

        service = TableServiceClient(
            endpoint=settings.azure_tables_endpoint, credential=DefaultAzureCredential()
        )
        return cls(service.get_table_client(TABLE_NAME))

    # -- entity mapping -------------------------------------------------------------------------------

    @staticmethod
    def _entity(user: User) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": USERS_PARTITION, "RowKey": user.key}
        for name in _USER_COLUMNS:
            value = getattr(user, name)
            entity[name] = value.value if isinstance(value, UserState) else value
        return entity

    @staticmethod
    def _user(entity: dict[str, Any]) -> User:
        values: dict[str, Any] = {name: str(entity.get(name) or "") for name in _USER_COLUMNS}
        values["state"] = UserState(values["state"])
        values["source"] = values["source"] or GOOGLE_FIT  # entities from before issue 13
        return User(key=str(entity["RowKey"]), **values)

    def _read(self, key: str) -> Any | None:
        try:
            return self.table.get_entity(partition_key=USERS_PARTITION, row_key=key)
        except ResourceNotFoundError:
            return None

    def _query(self, condition: str, parameters: dict[str, str]) -> list[User]:
        entities = self.table.query_entities(
            query_filter=f"PartitionKey eq @pk and {condition}",
            parameters={"pk": USERS_PARTITION, **parameters},
        )
        return sorted((self._user(e) for e in entities), key=lambda u: (u.created_at, u.key))

    # -- reads ----------------------------------------------------------------------------------------

    def get(self, key: str) -> User | None:
        if not isinstance(key, str) or not USER_KEY_RE.match(key):
            return None  # not a key we could have issued; nothing to look up
        entity = self._read(key)
        return None if entity is None else self._user(entity)

    def find_by_google_sub(self, google_sub: str) -> User | None:
        users = self._query("google_sub eq @sub", {"sub": str(google_sub)})
        return users[0] if users else None

    def find_by_patient(self, patient_id: str) -> User | None:
        users = self._query("patient_id eq @patient", {"patient": str(patient_id)})
        return users[0] if users else None

    def list(self, states: Iterable[UserState] | None = None) -> list[User]:
        if states is None:
            entities = self.table.query_entities(
                query_filter="PartitionKey eq @pk", parameters={"pk": USERS_PARTITION}
            )
            return sorted((self._user(e) for e in entities), key=lambda u: (u.created_at, u.key))
        wanted = sorted({UserState(s).value for s in states})
        if not wanted:
            return []
        # Spaces around every @name: the SDK substitutes whole space-separated words.
        condition = "( " + " or ".join(f"state eq @s{i}" for i in range(len(wanted))) + " )"
        return self._query(condition, {f"s{i}": state for i, state in enumerate(wanted)})

    # -- writes ---------------------------------------------------------------------------------------

    def _update(self, key: str, change: Callable[[User], User], entity: Any | None = None) -> User:
        """Apply ``change`` to the stored row under its ETag; on 412 re-read, re-apply, settle, retry."""
        conflicted = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if entity is None:
                entity = self._read(key)
                if entity is None:
                    raise KeyError(f"no user with key {key!r}")
            stored = self._user(entity)
            desired = change(stored)
            if conflicted:
                desired = resolve_state_conflict(desired, stored)
            if desired == stored:
                return stored
            try:
                self.table.update_entity(
                    self._entity(desired),
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return desired
            except ResourceNotFoundError as exc:
                raise KeyError(f"no user with key {key!r}") from exc
            except HttpResponseError as exc:
                if not _is_precondition_failed(exc):
                    raise
                log.warning(
                    "users row %s changed concurrently (HTTP 412); re-reading and merging (attempt %d of %d)",
                    key,
                    attempt,
                    MAX_ATTEMPTS,
                )
                conflicted, entity = True, None
        raise ConcurrentUpdateError(f"users row {key} kept changing; gave up after {MAX_ATTEMPTS} attempts")

    def set_state(self, key: str, state: UserState, reason: str = "") -> User:
        check_user_key(key)
        state = UserState(state)
        now = self._clock()
        return self._update(
            key, lambda stored: replace(stored, state=state, state_reason=reason, state_changed_at=now)
        )

    def _claim(self, google_sub: str, proposed_key: str | None) -> tuple[str, bool]:
        """The user key owning this Google account, claiming ``proposed_key`` (or a fresh key) if nobody
        has; the flag says whether this call made the claim."""
        index_key = sub_index_key(google_sub)
        for _ in range(MAX_ATTEMPTS):
            with contextlib.suppress(ResourceNotFoundError):
                claim = self.table.get_entity(partition_key=BY_SUB_PARTITION, row_key=index_key)
                return str(claim["user_key"]), False
            candidate = proposed_key or new_user_key()
            try:
                self.table.create_entity(
                    {"PartitionKey": BY_SUB_PARTITION, "RowKey": index_key, "user_key": candidate}
                )
                return candidate, True
            except ResourceExistsError:
                continue  # a concurrent onboarding claimed it first: use theirs
        raise ConcurrentUpdateError(f"could not claim a user key after {MAX_ATTEMPTS} attempts")

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

        key, claimed_now = self._claim(google_sub, key)
        for _ in range(MAX_ATTEMPTS):
            entity = self._read(key)
            if entity is not None and entity.get("google_sub") != google_sub:
                if claimed_now:  # undo our claim: the key we proposed is taken by another account
                    self.table.delete_entity(
                        partition_key=BY_SUB_PARTITION, row_key=sub_index_key(google_sub)
                    )
                raise ValueError(f"user key {key} already belongs to another Google account")
            if entity is not None:
                return self._update(key, reactivate, entity)
            user = User(
                key=key,
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
                self.table.create_entity(self._entity(user))
                return user
            except ResourceExistsError:
                continue  # a concurrent onboarding of the same account created the row: update it
        raise ConcurrentUpdateError(f"users row {key} kept changing; gave up after {MAX_ATTEMPTS} attempts")

    # -- import leases ---------------------------------------------------------------------------------

    def _read_lease(self, user_key: str) -> Any | None:
        try:
            return self.table.get_entity(partition_key=LEASE_PARTITION, row_key=user_key)
        except ResourceNotFoundError:
            return None

    def claim_import(self, user_key: str, owner: str, ttl_seconds: float) -> bool:
        check_lease(user_key, owner, ttl_seconds)
        for _ in range(MAX_ATTEMPTS):
            now = time.time()
            lease = {
                "PartitionKey": LEASE_PARTITION,
                "RowKey": user_key,
                "owner": owner,
                "expires_at": float(now + ttl_seconds),
            }
            stored = self._read_lease(user_key)
            if stored is None:
                try:
                    self.table.create_entity(lease)
                    return True
                except ResourceExistsError:
                    continue  # another claimer created it first: look at theirs
            if stored.get("owner") != owner and float(stored.get("expires_at") or 0) > now:
                return False  # another owner's live lease
            try:
                self.table.update_entity(
                    lease,
                    mode=UpdateMode.REPLACE,
                    etag=stored.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return True
            except ResourceNotFoundError:
                continue  # released in between: claim it afresh
            except HttpResponseError as exc:
                if not _is_precondition_failed(exc):
                    raise
                continue  # renewed, taken over or released in between: decide again on what is stored
        raise ConcurrentUpdateError(
            f"import lease of {user_key} kept changing; gave up after {MAX_ATTEMPTS} attempts"
        )

    def release_import(self, user_key: str, owner: str) -> None:
        check_lease(user_key, owner)
        for _ in range(MAX_ATTEMPTS):
            stored = self._read_lease(user_key)
            if stored is None or stored.get("owner") != owner:
                return  # not ours (any more): never release someone else's lease
            try:
                self.table.delete_entity(
                    partition_key=LEASE_PARTITION,
                    row_key=user_key,
                    etag=stored.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return
            except ResourceNotFoundError:
                return
            except HttpResponseError as exc:
                if not _is_precondition_failed(exc):
                    raise
        log.warning("import lease of %s kept changing while being released; it expires on its own", user_key)

    def import_holder(self, user_key: str) -> str | None:
        check_user_key(user_key)
        stored = self._read_lease(user_key)
        if stored is None or float(stored.get("expires_at") or 0) <= time.time():
            return None
        return str(stored.get("owner") or "") or None
