"""Users rows written before issue 13 have no source: every backend reads them as Google Fit users; tables from
before issue 9 gain import leases."""

from __future__ import annotations

import sqlite3
import uuid

import psycopg2
from azure.data.tables import TableClient

from fitonfhir_dagster.stores.azure_tables import AzureUsersTable, sub_index_key
from fitonfhir_dagster.stores.postgres_users import PostgresUsersTable
from fitonfhir_dagster.stores.users import SqliteUsersTable

OLD_COLUMNS = (
    "key, google_sub, google_issuer, patient_id, state, external_system, external_id, scopes,"
    " state_reason, created_at, state_changed_at"
)
OLD_ROW = (
    "u-old0000001",
    "sub-old",
    "https://accounts.google.com",
    "patient-old",
    "active",
    "",
    "",
    "",
    "",
    "2025-01-01T00:00:00Z",
    "2025-01-01T00:00:00Z",
)


def _assert_fit_user_that_can_move(users) -> None:
    old = users.get("u-old0000001")
    assert old is not None and (old.source, old.cutover_day) == ("google-fit", "")
    moved = users.upsert_onboarded(
        google_sub="sub-old",
        google_issuer="https://accounts.google.com",
        patient_id="patient-old",
        source="google-health",
    )
    assert moved.key == old.key and moved.source == "google-health" and moved.cutover_day
    assert users.get(old.key) == moved
    # issue 9: a table from before import leases gains them on its next open
    assert users.claim_import(old.key, "run-after-upgrade", 60)
    assert users.import_holder(old.key) == "run-after-upgrade"


def test_an_sqlite_table_from_before_sources_gains_the_columns_and_reads_as_fit(tmp_path) -> None:
    path = tmp_path / "users.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE users (key TEXT PRIMARY KEY, google_sub TEXT NOT NULL UNIQUE,"
            " google_issuer TEXT NOT NULL, patient_id TEXT NOT NULL, state TEXT NOT NULL,"
            " external_system TEXT NOT NULL DEFAULT '', external_id TEXT NOT NULL DEFAULT '',"
            " scopes TEXT NOT NULL DEFAULT '', state_reason TEXT NOT NULL DEFAULT '',"
            " created_at TEXT NOT NULL, state_changed_at TEXT NOT NULL)"
        )
        db.execute(f"INSERT INTO users ({OLD_COLUMNS}) VALUES ({', '.join('?' * 11)})", OLD_ROW)  # noqa: S608

    _assert_fit_user_that_can_move(SqliteUsersTable(path))


def test_a_postgres_table_from_before_sources_gains_the_columns_and_reads_as_fit(postgres_url) -> None:
    name = "users_" + uuid.uuid4().hex[:12]
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {name} (key TEXT PRIMARY KEY, google_sub TEXT NOT NULL UNIQUE,"
            " google_issuer TEXT NOT NULL, patient_id TEXT NOT NULL, state TEXT NOT NULL,"
            " external_system TEXT NOT NULL DEFAULT '', external_id TEXT NOT NULL DEFAULT '',"
            " scopes TEXT NOT NULL DEFAULT '', state_reason TEXT NOT NULL DEFAULT '',"
            " created_at TEXT NOT NULL, state_changed_at TEXT NOT NULL, version BIGINT NOT NULL DEFAULT 1)"
        )
        cur.execute(f"INSERT INTO {name} ({OLD_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", OLD_ROW)  # noqa: S608
    table = PostgresUsersTable(postgres_url, table=name)
    try:
        _assert_fit_user_that_can_move(table)
    finally:
        table.close()


def test_an_azure_entity_from_before_sources_reads_as_fit(azurite_connection_string) -> None:
    name = "users" + uuid.uuid4().hex[:12]
    raw = TableClient.from_connection_string(azurite_connection_string, table_name=name)
    raw.create_table()
    columns = [c.strip() for c in OLD_COLUMNS.split(",")]
    entity = dict(zip(columns, OLD_ROW, strict=True))
    raw.create_entity({"PartitionKey": "users", "RowKey": entity.pop("key"), **entity})
    raw.create_entity(
        {"PartitionKey": "by-sub", "RowKey": sub_index_key("sub-old"), "user_key": "u-old0000001"}
    )

    _assert_fit_user_that_can_move(AzureUsersTable(raw, create_table=False))
