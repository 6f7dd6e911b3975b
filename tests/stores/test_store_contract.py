"""One contract for every store backend: the local default and its Azure twin must behave the same.

Each test runs against every backend: SQLite / Azure Tables (Azurite) / PostgreSQL (a real server), encrypted
files / Key Vault (the real SDK over a wire-level Key Vault stand-in), local files / Azure Blob (Azurite).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from datetime import UTC, date, datetime

import pytest
from cryptography.fernet import Fernet

from fitonfhir_dagster.stores.archive import Archive, LocalArchive, object_name
from fitonfhir_dagster.stores.azure_blob import BlobArchive
from fitonfhir_dagster.stores.azure_keyvault import API_VERSION, KeyVaultTokenVault
from fitonfhir_dagster.stores.azure_tables import AzureUsersTable
from fitonfhir_dagster.stores.keys import USER_KEY_RE
from fitonfhir_dagster.stores.postgres_users import PostgresUsersTable
from fitonfhir_dagster.stores.users import SqliteUsersTable, UsersTable, UserState, source_for_day
from fitonfhir_dagster.stores.vault import LocalTokenVault, TokenVault, VaultError
from tests.support.keyvault import KeyVaultWire

TOKEN = "1//0gREFRESH-token-never-to-be-seen-Xy7"
HOSTILE = [
    "x' or 'a' eq 'a",
    "' or PartitionKey ne '",
    "' or RowKey ne '' or google_sub eq '",
    "users' or 1 eq 1 or 'a' eq 'a",
    "@pk",
    "x'); DROP TABLE users; --",
]


# -- backends ---------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "azure-tables", "postgres"])
def users(request: pytest.FixtureRequest, tmp_path) -> UsersTable:
    if request.param == "sqlite":
        return SqliteUsersTable(tmp_path / "users.sqlite3")
    if request.param == "postgres":
        table = PostgresUsersTable(
            request.getfixturevalue("postgres_url"), table="users_" + uuid.uuid4().hex[:12]
        )
        request.addfinalizer(table.close)
        return table
    conn = request.getfixturevalue("azurite_connection_string")
    return AzureUsersTable.from_connection_string(conn, table_name="users" + uuid.uuid4().hex[:12])


@pytest.fixture(params=["local-files", "key-vault"])
def vault(request: pytest.FixtureRequest, tmp_path) -> TokenVault:
    if request.param == "local-files":
        return LocalTokenVault(tmp_path / "vault", Fernet.generate_key().decode())
    return KeyVaultTokenVault(KeyVaultWire().secret_client(api_version=API_VERSION))


@pytest.fixture(params=["local-files", "azure-blob"])
def archive(request: pytest.FixtureRequest, tmp_path) -> Archive:
    if request.param == "local-files":
        return LocalArchive(tmp_path / "archive")
    conn = request.getfixturevalue("azurite_connection_string")
    return BlobArchive.from_connection_string(conn, container="archive-" + uuid.uuid4().hex[:12])


def onboard(users: UsersTable, sub: str, patient: str, **extra: str):
    return users.upsert_onboarded(
        google_sub=sub, google_issuer="https://accounts.google.com", patient_id=patient, **extra
    )


# -- users ------------------------------------------------------------------------------------------


def test_onboarding_a_new_account_creates_an_active_user_under_an_opaque_key(users: UsersTable) -> None:
    user = onboard(users, "sub-1", "patient-1", external_system="ehr", external_id="e-1", scopes="a b")

    assert USER_KEY_RE.match(user.key)
    assert "sub-1" not in user.key
    assert user.state is UserState.ACTIVE
    assert (user.google_sub, user.patient_id, user.external_id, user.scopes) == (
        "sub-1",
        "patient-1",
        "e-1",
        "a b",
    )
    assert user.created_at and user.state_changed_at == user.created_at
    assert users.get(user.key) == user


def test_reonboarding_the_same_account_keeps_its_key_and_reactivates_it(users: UsersTable) -> None:
    first = onboard(users, "sub-1", "patient-1", external_system="ehr", external_id="e-1", scopes="a")
    users.set_state(first.key, UserState.REVOKED, "patient revoked consent")

    again = onboard(users, "sub-1", "patient-2", scopes="a b")

    assert again.key == first.key
    assert again.state is UserState.ACTIVE and again.state_reason == ""
    assert again.patient_id == "patient-2" and again.scopes == "a b"
    assert (again.external_system, again.external_id) == ("ehr", "e-1")  # blank means "keep"
    assert users.get(first.key) == again
    assert [u.key for u in users.list()] == [first.key]


def test_a_proposed_key_is_used_for_a_new_account_and_ignored_for_a_known_one(users: UsersTable) -> None:
    new = onboard(users, "sub-1", "patient-1", key="u-proposed01")
    known = onboard(users, "sub-1", "patient-1", key="u-proposed02")

    assert new.key == known.key == "u-proposed01"
    with pytest.raises(ValueError, match="not a valid user key"):
        onboard(users, "sub-2", "patient-2", key="../etc")
    assert users.find_by_google_sub("sub-2") is None


def test_onboarding_needs_a_google_account_and_a_patient(users: UsersTable) -> None:
    with pytest.raises(ValueError, match="google_sub and patient_id are required"):
        onboard(users, "", "patient-1")
    with pytest.raises(ValueError, match="google_sub and patient_id are required"):
        onboard(users, "sub-1", "")
    assert users.list() == []


def test_users_are_found_by_google_account_and_by_patient(users: UsersTable) -> None:
    one = onboard(users, "sub-1", "patient-1")
    two = onboard(users, "sub-2", "patient-2")

    assert users.find_by_google_sub("sub-1") == one
    assert users.find_by_google_sub("sub-2") == two
    assert users.find_by_patient("patient-2") == two
    assert users.find_by_google_sub("sub-3") is None
    assert users.find_by_patient("patient-3") is None
    assert users.get("u-unknown000") is None


def test_list_returns_everyone_in_onboarding_order_or_only_the_asked_states(users: UsersTable) -> None:
    a = onboard(users, "sub-a", "p-a")
    b = onboard(users, "sub-b", "p-b")
    c = onboard(users, "sub-c", "p-c")
    users.set_state(b.key, UserState.UNAUTHORIZED, "invalid_grant")
    users.set_state(c.key, UserState.REVOKED, "patient revoked consent")

    assert sorted(u.key for u in users.list()) == sorted([a.key, b.key, c.key])
    assert [u.key for u in users.list([UserState.ACTIVE])] == [a.key]
    assert sorted(u.key for u in users.list([UserState.UNAUTHORIZED, UserState.REVOKED])) == sorted(
        [b.key, c.key]
    )
    assert users.list([]) == []


def test_set_state_records_the_state_and_its_reason(users: UsersTable) -> None:
    user = onboard(users, "sub-1", "patient-1")

    changed = users.set_state(user.key, UserState.UNAUTHORIZED, "invalid_grant")

    assert (changed.state, changed.state_reason) == (UserState.UNAUTHORIZED, "invalid_grant")
    assert changed.state_changed_at >= user.state_changed_at
    assert users.get(user.key) == changed
    assert users.find_by_google_sub("sub-1") == changed


def test_set_state_of_an_unknown_user_fails_and_names_the_key(users: UsersTable) -> None:
    with pytest.raises(KeyError, match="u-unknown000"):
        users.set_state("u-unknown000", UserState.REVOKED)
    with pytest.raises(ValueError, match="not a valid user key"):
        users.set_state("x' or 'a' eq 'a", UserState.REVOKED)
    assert users.list() == []


def test_a_new_user_comes_from_google_fit_unless_onboarded_for_another_source(users: UsersTable) -> None:
    fit = onboard(users, "sub-1", "patient-1")
    health = onboard(users, "sub-2", "patient-2", source="google-health")

    assert (fit.source, fit.cutover_day) == ("google-fit", "")
    assert (health.source, health.cutover_day) == ("google-health", "")
    assert users.get(health.key) == health and users.find_by_google_sub("sub-1") == fit
    with pytest.raises(ValueError, match="unknown data source 'fitbit'"):
        onboard(users, "sub-3", "patient-3", source="fitbit")


def test_a_fit_user_consenting_to_google_health_keeps_key_and_patient_and_cuts_over_tomorrow(
    users: UsersTable,
) -> None:
    fit = onboard(users, "sub-1", "patient-1")

    moved = onboard(users, "sub-1", "patient-1", source="google-health")

    tomorrow = (datetime.now(UTC).date()).toordinal() + 1
    assert (moved.key, moved.patient_id) == (fit.key, fit.patient_id)
    assert moved.source == "google-health"
    assert date.fromisoformat(moved.cutover_day).toordinal() == tomorrow
    assert users.get(fit.key) == moved
    assert source_for_day(moved, moved.cutover_day) == "google-health"
    before = date.fromordinal(tomorrow - 1).isoformat()
    assert source_for_day(moved, before) == "google-fit"


def test_the_cut_over_day_survives_re_onboarding_and_never_falls_back_to_fit(users: UsersTable) -> None:
    onboard(users, "sub-1", "patient-1")
    moved = onboard(users, "sub-1", "patient-1", source="google-health")

    again = onboard(users, "sub-1", "patient-1", source="google-health")
    with_fit = onboard(users, "sub-1", "patient-1", source="google-fit")
    plain = onboard(users, "sub-1", "patient-1")

    for later in (again, with_fit, plain):
        assert (later.source, later.cutover_day) == ("google-health", moved.cutover_day)
    assert users.set_state(moved.key, UserState.REVOKED).cutover_day == moved.cutover_day


@pytest.mark.parametrize("hostile", HOSTILE)
def test_query_injection_finds_nothing_and_changes_nothing(users: UsersTable, hostile: str) -> None:
    onboard(users, "sub-1", "patient-1")
    onboard(users, "sub-2", "patient-2")
    before = users.list()

    assert users.find_by_google_sub(hostile) is None
    assert users.find_by_patient(hostile) is None
    assert users.get(hostile) is None
    assert users.list() == before


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_are_stored_verbatim_and_match_only_themselves(
    users: UsersTable, hostile: str
) -> None:
    onboard(users, "sub-1", "patient-1")
    odd = onboard(users, hostile, hostile)

    assert users.find_by_google_sub(hostile) == odd
    assert users.find_by_patient(hostile) == odd
    assert users.find_by_google_sub("sub-1").patient_id == "patient-1"
    assert len(users.list()) == 2


# -- import leases (issue 9): at most one run imports a user at a time ---------------------------------

RUN_A, RUN_B = "0f3c2a1e-run-a", "7d9b4c2f-run-b"


def test_an_import_lease_is_held_by_one_owner_until_it_releases_it(users: UsersTable) -> None:
    user = onboard(users, "sub-lease", "patient-lease")
    assert users.import_holder(user.key) is None
    assert users.claim_import(user.key, RUN_A, 60) is True
    assert users.import_holder(user.key) == RUN_A
    assert users.claim_import(user.key, RUN_B, 60) is False  # another owner's live lease
    assert users.claim_import(user.key, RUN_A, 60) is True  # the holder renews
    users.release_import(user.key, RUN_B)  # not the holder: nothing happens
    assert users.import_holder(user.key) == RUN_A
    users.release_import(user.key, RUN_A)
    assert users.import_holder(user.key) is None
    users.release_import(user.key, RUN_A)  # releasing twice is harmless
    assert users.claim_import(user.key, RUN_B, 60) is True
    assert users.import_holder(user.key) == RUN_B
    # a lease is not part of the user: the row and the listing are as before
    assert users.get(user.key) == user and users.list() == [user]


def test_renewing_an_import_lease_extends_it(users: UsersTable) -> None:
    key = "u-lease00002"
    assert users.claim_import(key, RUN_A, 0.8)
    time.sleep(0.5)
    assert users.claim_import(key, RUN_A, 0.8)  # renewed: now expires 0.8 s from here
    time.sleep(0.5)  # past the first expiry, not the renewed one
    assert users.import_holder(key) == RUN_A
    assert users.claim_import(key, RUN_B, 60) is False


def test_an_expired_import_lease_is_taken_over_and_its_old_holder_can_neither_release_nor_renew_it(
    users: UsersTable,
) -> None:
    key = "u-lease00003"
    assert users.claim_import(key, RUN_A, 0.3)  # RUN_A is killed: it never renews or releases
    time.sleep(0.5)
    assert users.import_holder(key) is None  # expired
    assert users.claim_import(key, RUN_B, 60) is True  # taken over
    users.release_import(key, RUN_A)  # the old holder's late release leaves the new holder's lease
    assert users.import_holder(key) == RUN_B
    assert users.claim_import(key, RUN_A, 60) is False  # nor can it renew what is now RUN_B's


def test_of_concurrent_claimers_of_one_import_lease_exactly_one_wins(users: UsersTable) -> None:
    key, claimers = "u-lease00004", 8
    start = threading.Barrier(claimers)
    won: dict[str, bool] = {}
    errors: list[BaseException] = []

    def claim(owner: str) -> None:
        start.wait()
        try:
            won[owner] = users.claim_import(key, owner, 60)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(won) == claimers
    winners = [owner for owner, ok in won.items() if ok]
    assert len(winners) == 1
    assert users.import_holder(key) == winners[0]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_lease_owner_is_stored_verbatim_and_holds_only_its_own_lease(
    users: UsersTable, hostile: str
) -> None:
    assert users.claim_import("u-lease00005", hostile, 60)
    assert users.import_holder("u-lease00005") == hostile
    assert users.import_holder("u-lease00006") is None
    assert users.claim_import("u-lease00006", RUN_A, 60)
    assert users.claim_import("u-lease00005", RUN_A, 60) is False


@pytest.mark.parametrize(
    ("key", "owner", "ttl"),
    [
        ("not-a-key", RUN_A, 60),
        ("u-lease00007", "", 60),
        ("u-lease00007", RUN_A, 0),
        ("u-lease00007", "x" * 201, 60),
    ],
)
def test_an_import_lease_needs_a_user_key_an_owner_and_a_positive_ttl(
    users: UsersTable, key: str, owner: str, ttl: float
) -> None:
    with pytest.raises(ValueError):
        users.claim_import(key, owner, ttl)
    assert users.import_holder("u-lease00007") is None


# -- vault ------------------------------------------------------------------------------------------


def test_vault_round_trip_and_overwrite(vault: TokenVault) -> None:
    vault.put("u-abcdefgh01", TOKEN)
    assert vault.get("u-abcdefgh01") == TOKEN

    vault.put("u-abcdefgh01", TOKEN + "-rotated")
    assert vault.get("u-abcdefgh01") == TOKEN + "-rotated"
    assert vault.get("u-abcdefgh02") is None


def test_vault_delete_then_put_again(vault: TokenVault) -> None:
    vault.delete("u-abcdefgh01")  # deleting what is not there is fine
    vault.put("u-abcdefgh01", TOKEN)
    vault.delete("u-abcdefgh01")
    assert vault.get("u-abcdefgh01") is None

    vault.put("u-abcdefgh01", TOKEN + "-again")  # Key Vault: recovers the soft-deleted secret first
    assert vault.get("u-abcdefgh01") == TOKEN + "-again"


def test_vault_refuses_an_empty_token(vault: TokenVault) -> None:
    with pytest.raises(VaultError, match="empty refresh token"):
        vault.put("u-abcdefgh01", "")


@pytest.mark.parametrize("bad_key", ["../u-abcdefgh01", "sub-123", "u-ABCDEFGH01", "", "u-a/b"])
def test_vault_refuses_keys_that_are_not_user_keys_without_echoing_the_token(
    vault: TokenVault, bad_key
) -> None:
    with pytest.raises(ValueError, match="not a valid user key") as caught:
        vault.put(bad_key, TOKEN)
    assert TOKEN not in "".join(traceback.format_exception(caught.value))
    with pytest.raises(ValueError, match="not a valid user key"):
        vault.get(bad_key)


def test_the_token_never_reaches_the_logs(vault: TokenVault, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vault.put("u-abcdefgh01", TOKEN)
    vault.get("u-abcdefgh01")
    vault.delete("u-abcdefgh01")
    vault.put("u-abcdefgh01", TOKEN)

    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(record.args) for record in caplog.records)


def test_local_vault_files_are_private(tmp_path) -> None:
    vault = LocalTokenVault(tmp_path / "vault")
    vault.put("u-abcdefgh01", TOKEN)

    entry = tmp_path / "vault" / "u-abcdefgh01.token"
    assert entry.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "vault" / "vault.key").stat().st_mode & 0o777 == 0o600
    assert TOKEN.encode() not in entry.read_bytes()  # encrypted at rest


def test_local_vault_entry_under_another_key_is_a_clear_error_without_the_token(tmp_path) -> None:
    LocalTokenVault(tmp_path / "vault", Fernet.generate_key().decode()).put("u-abcdefgh01", TOKEN)
    other = LocalTokenVault(tmp_path / "vault", Fernet.generate_key().decode())

    with pytest.raises(
        VaultError, match="u-abcdefgh01 cannot be decrypted with the configured key"
    ) as caught:
        other.get("u-abcdefgh01")
    assert TOKEN not in "".join(traceback.format_exception(caught.value))


# -- archive ----------------------------------------------------------------------------------------

KEY = "u-abcdefgh01"


def test_archive_round_trip_overwrite_and_delete(archive: Archive) -> None:
    name = object_name("raw", "2025-01-01", KEY, "page-0001.json")
    assert archive.get(name) is None

    archive.put(name, b'{"point": []}')
    assert archive.get(name) == b'{"point": []}'

    archive.put(name, b"replaced")
    assert archive.get(name) == b"replaced"
    assert list(archive.list()) == [name]

    archive.delete(name)
    archive.delete(name)  # twice is fine
    assert archive.get(name) is None
    assert list(archive.list()) == []


def test_archive_keeps_binary_and_large_objects_intact(archive: Archive) -> None:
    name = object_name("messages", "2025-01-01", KEY, "batch.bin")
    data = bytes(range(256)) * 8192  # 2 MiB
    archive.put(name, data)
    assert archive.get(name) == data


def test_archive_writes_chunks_and_reads_lines_without_holding_the_object(archive: Archive) -> None:
    name = object_name("fit_datasets", "2025-01-01", KEY, "datasets.json")
    assert archive.get_lines(name) is None
    lines = [b"{" + b"x" * n + b"}\n" for n in (0, 10, 5_000_000, 3)] + [b"last line, no newline"]
    archive.put_chunks(name, iter(lines))  # a generator: consumed once, never joined by the caller
    assert archive.get(name) == b"".join(lines)
    read = archive.get_lines(name)
    assert read is not None and list(read) == lines
    archive.put_chunks(name, iter([b"replaced\n"]))  # replaced whole, never merged
    assert list(archive.get_lines(name) or []) == [b"replaced\n"]
    archive.put_chunks(name, iter([]))
    assert archive.get(name) == b"" and list(archive.get_lines(name) or []) == []


def test_archive_lists_by_prefix_in_name_order(archive: Archive) -> None:
    names = [
        object_name("raw", "2025-01-02", KEY, "page-0002.json"),
        object_name("raw", "2025-01-01", KEY, "page-0001.json"),
        object_name("raw", "2025-01-02", KEY, "page-0001.json"),
        object_name("messages", "2025-01-02", KEY, "page-0001.json"),
    ]
    for name in names:
        archive.put(name, name.encode())

    assert list(archive.list()) == sorted(names)
    assert list(archive.list("raw/date=2025-01-02/")) == sorted(names[0::2])
    assert list(archive.list("raw/")) == sorted(names[:3])
    assert list(archive.list("nothing/")) == []


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "raw/../../x",
        "/etc/passwd",
        "raw//x",
        "raw/./x",
        "",
        "raw/x/",
        "raw\\x",
        "raw/.hidden",
        "raw/a b",
        "..",
    ],
)
def test_archive_refuses_unsafe_object_names(archive: Archive, name: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        archive.put(name, b"x")
    with pytest.raises(ValueError, match="unsafe"):
        archive.get(name)
    with pytest.raises(ValueError, match="unsafe"):
        archive.delete(name)
    assert list(archive.list()) == []


@pytest.mark.parametrize("segment", ["../x", "a/b", "", ".x"])
def test_object_names_refuse_unsafe_segments(segment: str) -> None:
    with pytest.raises(ValueError):
        object_name("raw", "2025-01-01", KEY, segment)
    with pytest.raises(ValueError):
        object_name("raw", segment, KEY, "x.json")


# -- erasure (issue 12 part 6): the `erased` state and deletion by prefix ------------------------------


def test_erased_is_a_state_every_backend_stores_and_lists(
    users: UsersTable,
) -> None:
    user = onboard(users, "sub-erase", "patient-erase")
    erased = users.set_state(user.key, UserState.ERASED, "erased on request")

    assert (erased.state, erased.state_reason) == (UserState.ERASED, "erased on request")
    assert users.get(user.key) == erased
    assert users.list([UserState.ERASED]) == [erased]
    assert users.list([UserState.ACTIVE]) == []


def test_an_older_postgres_table_is_widened_to_accept_erased(postgres_url: str) -> None:
    import psycopg2

    table = "users_" + uuid.uuid4().hex[:12]
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:  # the schema before `erased`
        cur.execute(
            f"CREATE TABLE {table} (key TEXT PRIMARY KEY, google_sub TEXT NOT NULL UNIQUE,"
            " google_issuer TEXT NOT NULL, patient_id TEXT NOT NULL,"
            " state TEXT NOT NULL CHECK (state IN ('active', 'unauthorized', 'revoked')),"
            " external_system TEXT NOT NULL DEFAULT '', external_id TEXT NOT NULL DEFAULT '',"
            " scopes TEXT NOT NULL DEFAULT '', state_reason TEXT NOT NULL DEFAULT '',"
            " created_at TEXT NOT NULL, state_changed_at TEXT NOT NULL, version BIGINT NOT NULL DEFAULT 1)"
        )
    users = PostgresUsersTable(postgres_url, table=table)
    try:
        user = onboard(users, "sub-old", "patient-old")
        assert users.set_state(user.key, UserState.ERASED).state == UserState.ERASED
        # the CHECK is still there, only wider
        with pytest.raises(psycopg2.errors.CheckViolation), psycopg2.connect(postgres_url) as conn:
            conn.cursor().execute(f"UPDATE {table} SET state = 'bogus'")
    finally:
        users.close()


def test_archive_delete_prefix_removes_exactly_the_objects_under_it(archive: Archive) -> None:
    other = "u-other0000"
    mine = [
        object_name(k, d, KEY, "x.json")
        for k in ("raw", "dead_letters")
        for d in ("2025-01-01", "2025-01-02")
    ]
    theirs = [object_name("raw", "2025-01-01", other, "x.json"), "raw/date=2025-01-011/user=u-x/x.json"]
    for name in mine + theirs:
        archive.put(name, b"{}")

    assert archive.delete_prefix(f"raw/date=2025-01-01/user={KEY}/") == 1
    assert archive.delete_prefix("dead_letters/") == 2
    assert archive.delete_prefix("dead_letters/") == 0
    assert sorted(archive.list()) == sorted([mine[1], *theirs])


@pytest.mark.parametrize("prefix", ["", "/", "../", "raw/../x"])
def test_archive_delete_prefix_refuses_an_empty_or_unsafe_prefix(archive: Archive, prefix: str) -> None:
    archive.put(object_name("raw", "2025-01-01", KEY, "x.json"), b"{}")
    with pytest.raises(ValueError):
        archive.delete_prefix(prefix)
    assert len(list(archive.list())) == 1
