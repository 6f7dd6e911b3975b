"""Azure Tables users table under concurrency (against Azurite): ETag conflicts are detected, merged by the
documented rule (newer state_changed_at wins; a tie goes to the more restrictive state) and retried, bounded."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ResourceModifiedError
from azure.data.tables import TableClient

from fitonfhir_dagster.settings import ConfigError, Settings
from fitonfhir_dagster.stores.azure_blob import BlobArchive
from fitonfhir_dagster.stores.azure_tables import (
    BY_SUB_PARTITION,
    MAX_ATTEMPTS,
    AzureUsersTable,
    ConcurrentUpdateError,
    resolve_state_conflict,
    sub_index_key,
)
from fitonfhir_dagster.stores.factory import open_archive, open_users_table
from fitonfhir_dagster.stores.users import User, UserState

ISSUER = "https://accounts.google.com"


class CompetitorBeforeUpdate:
    """A real TableClient that lets a competing writer commit just before our conditional update
    (every time, or only the first), and counts the 412s the service answered."""

    def __init__(self, real: TableClient, competitor: Callable[[], Any], *, every_time: bool = False) -> None:
        self._real = real
        self._competitor = competitor
        self._every_time = every_time
        self.fired = 0
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_entity(self, *args: Any, **kwargs: Any) -> Any:
        if self._every_time or not self.fired:
            self.fired += 1
            self._competitor()
        try:
            return self._real.update_entity(*args, **kwargs)
        except ResourceModifiedError:
            self.conflicts += 1
            raise


def at(hh_mm_ss: str) -> Callable[[], str]:
    return lambda: f"2025-06-01T{hh_mm_ss}Z"


@pytest.fixture
def table(azurite_connection_string: str) -> TableClient:
    client = TableClient.from_connection_string(
        azurite_connection_string, table_name="race" + uuid.uuid4().hex[:12]
    )
    client.create_table()
    return client


def onboarded(table: TableClient, sub: str = "sub-1") -> User:
    return AzureUsersTable(table, clock=at("10:00:00"), create_table=False).upsert_onboarded(
        google_sub=sub, google_issuer=ISSUER, patient_id="patient-1", scopes="a"
    )


def reonboard(users: AzureUsersTable, key: str) -> User:
    return users.upsert_onboarded(
        google_sub="sub-1", google_issuer=ISSUER, patient_id="patient-2", scopes="a b"
    )


def revoke(users: AzureUsersTable, key: str) -> User:
    return users.set_state(key, UserState.REVOKED, "patient revoked consent")


def unauthorize(users: AzureUsersTable, key: str) -> User:
    return users.set_state(key, UserState.UNAUTHORIZED, "invalid_grant")


def reactivate(users: AzureUsersTable, key: str) -> User:
    return users.set_state(key, UserState.ACTIVE, "")


# (competitor's op, its clock, stale writer's op, its clock, final state, whose state_changed_at is kept)
RACES = [
    pytest.param(
        revoke, "10:00:05", reonboard, "10:00:03", UserState.REVOKED, "competitor", id="older-reonboard-loses"
    ),
    pytest.param(
        revoke, "10:00:05", reonboard, "10:00:05", UserState.REVOKED, "competitor", id="tied-reonboard-loses"
    ),
    pytest.param(
        revoke, "10:00:05", reonboard, "10:00:07", UserState.ACTIVE, "stale", id="newer-reonboard-wins"
    ),
    pytest.param(
        unauthorize, "10:00:05", reactivate, "10:00:05", UserState.UNAUTHORIZED, "competitor", id="tie-unauth"
    ),
    pytest.param(
        reonboard, "10:00:05", revoke, "10:00:05", UserState.REVOKED, "stale", id="tied-revoke-wins"
    ),
    pytest.param(
        reonboard, "10:00:05", revoke, "10:00:03", UserState.ACTIVE, "competitor", id="older-revoke-loses"
    ),
    pytest.param(
        unauthorize, "10:00:05", revoke, "10:00:05", UserState.REVOKED, "stale", id="revoked-beats-unauth"
    ),
]


@pytest.mark.parametrize(
    ("competitor_op", "competitor_at", "stale_op", "stale_at", "expected", "winner"), RACES
)
def test_a_stale_writer_hits_412_and_the_merge_rule_settles_the_state(
    table: TableClient, caplog, competitor_op, competitor_at, stale_op, stale_at, expected, winner
) -> None:
    user = onboarded(table)
    competitor = AzureUsersTable(table, clock=at(competitor_at), create_table=False)
    racing = CompetitorBeforeUpdate(table, lambda: competitor_op(competitor, user.key))
    stale = AzureUsersTable(racing, clock=at(stale_at), create_table=False)  # type: ignore[arg-type]

    returned = stale_op(stale, user.key)

    assert racing.conflicts == 1  # the service answered 412 once...
    assert "HTTP 412" in caplog.text  # ...and it was handled (logged, re-read, merged, retried)
    stored = competitor.get(user.key)
    assert stored == returned
    assert stored.state is expected
    assert stored.state_changed_at == at(competitor_at if winner == "competitor" else stale_at)()


def test_a_lost_reactivation_still_updates_the_account_fields(table: TableClient) -> None:
    user = onboarded(table)
    revoker = AzureUsersTable(table, clock=at("10:00:05"), create_table=False)
    racing = CompetitorBeforeUpdate(table, lambda: revoke(revoker, user.key))
    stale = AzureUsersTable(racing, clock=at("10:00:03"), create_table=False)  # type: ignore[arg-type]

    result = reonboard(stale, user.key)

    assert racing.conflicts == 1
    assert (result.state, result.state_reason, result.state_changed_at) == (
        UserState.REVOKED,
        "patient revoked consent",
        "2025-06-01T10:00:05Z",
    )
    assert (result.patient_id, result.scopes) == ("patient-2", "a b")
    assert revoker.get(user.key) == result


def test_retries_are_bounded_when_the_row_never_stops_changing(table: TableClient) -> None:
    user = onboarded(table)
    # Fixed clocks: the stale writer's change is always the newer one, so every merge says "write again"
    # (with the wall clock the outcome would depend on whether a second boundary is crossed).
    flipper = AzureUsersTable(table, clock=at("10:00:01"), create_table=False)
    states = iter([UserState.UNAUTHORIZED, UserState.ACTIVE] * MAX_ATTEMPTS)
    racing = CompetitorBeforeUpdate(table, lambda: flipper.set_state(user.key, next(states)), every_time=True)
    stale = AzureUsersTable(racing, clock=at("10:00:05"), create_table=False)  # type: ignore[arg-type]

    with pytest.raises(
        ConcurrentUpdateError, match=f"{user.key} kept changing; gave up after {MAX_ATTEMPTS}"
    ):
        stale.set_state(user.key, UserState.REVOKED, "patient revoked consent")
    assert racing.conflicts == MAX_ATTEMPTS


def test_concurrent_onboardings_of_one_account_agree_on_one_user_key(
    azurite_connection_string: str, table: TableClient
) -> None:
    writers = 6
    barrier = threading.Barrier(writers)
    results: list[User] = []
    errors: list[BaseException] = []

    def onboard() -> None:
        own_client = TableClient.from_connection_string(
            azurite_connection_string, table_name=table.table_name
        )
        users = AzureUsersTable(own_client, create_table=False)
        barrier.wait()
        try:
            results.append(
                users.upsert_onboarded(google_sub="sub-race", google_issuer=ISSUER, patient_id="patient-1")
            )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=onboard) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len({user.key for user in results}) == 1
    users = AzureUsersTable(table, create_table=False)
    assert [u.key for u in users.list()] == [results[0].key]
    claims = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": BY_SUB_PARTITION}))
    assert [(c["RowKey"], c["user_key"]) for c in claims] == [(sub_index_key("sub-race"), results[0].key)]


def test_a_proposed_key_owned_by_another_account_is_refused_and_leaves_no_claim(table: TableClient) -> None:
    users = AzureUsersTable(table, create_table=False)
    owner = users.upsert_onboarded(google_sub="sub-1", google_issuer=ISSUER, patient_id="p-1")

    with pytest.raises(ValueError, match=f"user key {owner.key} already belongs to another Google account"):
        users.upsert_onboarded(google_sub="sub-2", google_issuer=ISSUER, patient_id="p-2", key=owner.key)

    assert users.get(owner.key) == owner
    second = users.upsert_onboarded(google_sub="sub-2", google_issuer=ISSUER, patient_id="p-2")
    assert second.key != owner.key


def test_claim_rows_never_show_up_as_users(table: TableClient) -> None:
    users = AzureUsersTable(table, create_table=False)
    user = users.upsert_onboarded(google_sub="sub-1", google_issuer=ISSUER, patient_id="p-1")

    assert users.list() == [user]
    assert users.find_by_google_sub("sub-1") == user
    assert len(list(table.list_entities())) == 2  # the user row and its by-sub claim


# -- the merge rule itself --------------------------------------------------------------------------


def _user(state: UserState, when: str, reason: str = "") -> User:
    return User("u-abcdefgh01", "sub", ISSUER, "p", state, state_reason=reason, state_changed_at=when)


@pytest.mark.parametrize(
    ("ours", "stored", "winner"),
    [
        (
            _user(UserState.ACTIVE, "2025-06-01T10:00:00Z"),
            _user(UserState.REVOKED, "2025-06-01T10:00:00Z"),
            "stored",
        ),
        (
            _user(UserState.ACTIVE, "2025-06-01T10:00:01Z"),
            _user(UserState.REVOKED, "2025-06-01T10:00:00Z"),
            "ours",
        ),
        (
            _user(UserState.REVOKED, "2025-06-01T10:00:00Z"),
            _user(UserState.ACTIVE, "2025-06-01T10:00:00Z"),
            "ours",
        ),
        (
            _user(UserState.REVOKED, "2025-06-01T09:59:59Z"),
            _user(UserState.ACTIVE, "2025-06-01T10:00:00Z"),
            "stored",
        ),
        (
            _user(UserState.UNAUTHORIZED, "2025-06-01T10:00:00Z"),
            _user(UserState.REVOKED, "2025-06-01T10:00:00Z"),
            "stored",
        ),
        (
            _user(UserState.ACTIVE, "2025-06-01T10:00:00+00:00"),
            _user(UserState.ACTIVE, "2025-06-01T10:00:00Z"),
            "ours",
        ),
    ],
)
def test_resolve_state_conflict(ours: User, stored: User, winner: str) -> None:
    merged = resolve_state_conflict(ours, stored)
    expected = ours if winner == "ours" else stored
    assert (merged.state, merged.state_reason, merged.state_changed_at) == (
        expected.state,
        expected.state_reason,
        expected.state_changed_at,
    )


# -- configuration ----------------------------------------------------------------------------------


def test_the_factory_opens_azure_stores_when_a_storage_connection_string_is_set(
    azurite_connection_string: str, tmp_path
) -> None:
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(tmp_path),
            "FITONFHIR_AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string,
            "FITONFHIR_AZURE_BLOB_CONTAINER": "factory-" + uuid.uuid4().hex[:8],
        }
    )
    users = open_users_table(settings)
    archive = open_archive(settings)

    assert isinstance(users, AzureUsersTable) and users.table.table_name == "users"
    assert isinstance(archive, BlobArchive)
    assert archive.container.container_name == settings.azure_blob_container
    sub = "sub-" + uuid.uuid4().hex
    assert (
        users.get(users.upsert_onboarded(google_sub=sub, google_issuer=ISSUER, patient_id="p").key).google_sub
        == sub
    )
    archive.put("raw/x.json", b"{}")
    assert list(archive.list()) == ["raw/x.json"]


def test_from_settings_without_azure_configuration_names_the_variables(tmp_path) -> None:
    settings = Settings.from_env({"FITONFHIR_HOME": str(tmp_path)})
    with pytest.raises(
        ConfigError, match="FITONFHIR_AZURE_STORAGE_CONNECTION_STRING or FITONFHIR_AZURE_TABLES"
    ):
        AzureUsersTable.from_settings(settings)
    with pytest.raises(
        ConfigError, match="FITONFHIR_AZURE_STORAGE_CONNECTION_STRING or FITONFHIR_AZURE_BLOB"
    ):
        BlobArchive.from_settings(settings)


def test_onboarding_completes_a_claim_left_behind_by_a_crash(table: TableClient) -> None:
    """Crash between claiming the account and writing the user row: the next onboarding repairs it."""
    table.create_entity(
        {"PartitionKey": BY_SUB_PARTITION, "RowKey": sub_index_key("sub-1"), "user_key": "u-crashed001"}
    )
    users = AzureUsersTable(table, create_table=False)
    assert users.find_by_google_sub("sub-1") is None

    user = users.upsert_onboarded(google_sub="sub-1", google_issuer=ISSUER, patient_id="p-1")

    assert user.key == "u-crashed001"
    assert users.list() == [user]
