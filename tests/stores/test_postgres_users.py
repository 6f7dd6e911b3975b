"""PostgreSQL users table against a real server: version conflicts are detected, merged by the same rule as on
Azure Tables (the same race table) and retried, bounded; one instance is safe to share between threads; the
URL's password never leaks; the factory chooses it from FITONFHIR_POSTGRES_URL."""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

from fitonfhir_dagster.settings import ConfigError, Settings
from fitonfhir_dagster.stores.factory import open_users_table
from fitonfhir_dagster.stores.postgres_users import (
    MAX_ATTEMPTS,
    ConcurrentUpdateError,
    PostgresUsersTable,
)
from fitonfhir_dagster.stores.users import User, UserState
from tests.stores.test_azure_users_concurrency import RACES, at
from tests.support.postgres import PostgresServer

ISSUER = "https://accounts.google.com"


class CompetitorBeforeWrite(PostgresUsersTable):
    """The real table, with a competing writer committing just before our conditional update (every time, or
    only the first); counts the conditional updates the server refused."""

    def __init__(
        self, *args: Any, competitor: Callable[[], Any], every_time: bool = False, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self._competitor = competitor
        self._every_time = every_time
        self.fired = 0
        self.conflicts = 0

    def _write_if_unchanged(self, user: User, version: int) -> bool:
        if self._every_time or not self.fired:
            self.fired += 1
            self._competitor()
        written = super()._write_if_unchanged(user, version)
        self.conflicts += not written
        return written


@pytest.fixture
def table_name(postgres_url: str) -> str:
    name = "race_" + uuid.uuid4().hex[:12]
    PostgresUsersTable(postgres_url, table=name).close()
    return name


def table(url: str, name: str, when: str | None = None, **kw: Any) -> PostgresUsersTable:
    clock = {} if when is None else {"clock": at(when)}
    return PostgresUsersTable(url, table=name, create_table=False, **clock, **kw)


def onboarded(url: str, name: str, sub: str = "sub-1") -> User:
    return table(url, name, "10:00:00").upsert_onboarded(
        google_sub=sub, google_issuer=ISSUER, patient_id="patient-1", scopes="a"
    )


@pytest.mark.parametrize(
    ("competitor_op", "competitor_at", "stale_op", "stale_at", "expected", "winner"), RACES
)
def test_a_stale_writer_loses_its_version_and_the_merge_rule_settles_the_state(
    postgres_url, table_name, caplog, competitor_op, competitor_at, stale_op, stale_at, expected, winner
) -> None:
    user = onboarded(postgres_url, table_name)
    competitor = table(postgres_url, table_name, competitor_at)
    stale = CompetitorBeforeWrite(
        postgres_url,
        table=table_name,
        create_table=False,
        clock=at(stale_at),
        competitor=lambda: competitor_op(competitor, user.key),
    )

    returned = stale_op(stale, user.key)

    assert stale.conflicts == 1  # the server refused the stale version once...
    assert "changed concurrently" in caplog.text  # ...and it was handled (logged, re-read, merged, retried)
    stored = competitor.get(user.key)
    assert stored == returned
    assert stored.state is expected
    assert stored.state_changed_at == at(competitor_at if winner == "competitor" else stale_at)()


def test_retries_are_bounded_when_the_row_never_stops_changing(postgres_url, table_name) -> None:
    user = onboarded(postgres_url, table_name)
    flipper = table(postgres_url, table_name, "10:00:01")
    states = iter([UserState.UNAUTHORIZED, UserState.ACTIVE] * MAX_ATTEMPTS)
    stale = CompetitorBeforeWrite(
        postgres_url,
        table=table_name,
        create_table=False,
        clock=at("10:00:05"),
        competitor=lambda: flipper.set_state(user.key, next(states)),
        every_time=True,
    )

    with pytest.raises(
        ConcurrentUpdateError, match=f"{user.key} kept changing; gave up after {MAX_ATTEMPTS}"
    ):
        stale.set_state(user.key, UserState.REVOKED, "patient revoked consent")
    assert stale.conflicts == MAX_ATTEMPTS


def test_one_instance_shared_by_threads_onboards_one_account_once_and_many_accounts_all(
    postgres_url, table_name
) -> None:
    users = table(postgres_url, table_name)
    writers = 8
    barrier = threading.Barrier(writers)
    same: list[User] = []
    own: list[User] = []
    errors: list[BaseException] = []

    def onboard(i: int) -> None:
        barrier.wait()
        try:
            same.append(users.upsert_onboarded(google_sub="sub-race", google_issuer=ISSUER, patient_id="p"))
            own.append(
                users.upsert_onboarded(google_sub=f"sub-{i}", google_issuer=ISSUER, patient_id=f"p{i}")
            )
            users.set_state(own[-1].key, UserState.UNAUTHORIZED, "invalid_grant")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=onboard, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len({u.key for u in same}) == 1
    assert len({u.key for u in own}) == writers
    assert [u.key for u in users.list([UserState.ACTIVE])] == [same[0].key]
    assert sorted(u.key for u in users.list([UserState.UNAUTHORIZED])) == sorted(u.key for u in own)


def test_a_proposed_key_owned_by_another_account_is_refused_and_changes_nothing(
    postgres_url, table_name
) -> None:
    users = table(postgres_url, table_name)
    owner = users.upsert_onboarded(google_sub="sub-1", google_issuer=ISSUER, patient_id="p-1")

    with pytest.raises(ValueError, match=f"user key {owner.key} already belongs to another Google account"):
        users.upsert_onboarded(google_sub="sub-2", google_issuer=ISSUER, patient_id="p-2", key=owner.key)

    assert users.list() == [owner]
    second = users.upsert_onboarded(google_sub="sub-2", google_issuer=ISSUER, patient_id="p-2")
    assert second.key != owner.key


def test_concurrent_first_starts_create_the_table_once(postgres_url) -> None:
    name = "boot_" + uuid.uuid4().hex[:12]
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        try:
            PostgresUsersTable(postgres_url, table=name).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert table(postgres_url, name).list() == []


@pytest.mark.parametrize("name", ["users; drop table x", "Users", "1users", "a" * 49, 'u"x'])
def test_only_plain_table_names_are_accepted(postgres_url, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid users table name"):
        PostgresUsersTable(postgres_url, table=name)


# -- configuration and secrets ----------------------------------------------------------------------


def test_the_factory_opens_postgres_when_its_url_is_set_even_next_to_a_storage_connection_string(
    postgres_url, tmp_path
) -> None:
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(tmp_path),
            "FITONFHIR_POSTGRES_URL": postgres_url,
            # serves the Blob archive; never contacted here
            "FITONFHIR_AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=http;AccountName=x;"
            "AccountKey=eA==;BlobEndpoint=http://127.0.0.1:9/x;",
        }
    )
    users = open_users_table(settings)

    assert isinstance(users, PostgresUsersTable) and users.table == "users"
    sub = "sub-" + uuid.uuid4().hex
    key = users.upsert_onboarded(google_sub=sub, google_issuer=ISSUER, patient_id="p").key
    assert users.get(key).google_sub == sub
    assert not (tmp_path / "users.sqlite3").exists()


def test_postgres_next_to_an_azure_tables_endpoint_is_an_error(postgres_url, tmp_path) -> None:
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(tmp_path),
            "FITONFHIR_POSTGRES_URL": postgres_url,
            "FITONFHIR_AZURE_TABLES_ENDPOINT": "https://example.table.core.windows.net",
        }
    )
    with pytest.raises(ConfigError, match="FITONFHIR_POSTGRES_URL or FITONFHIR_AZURE_TABLES_ENDPOINT"):
        open_users_table(settings)


def test_a_missing_or_malformed_url_is_an_error_that_does_not_echo_it(tmp_path) -> None:
    with pytest.raises(ConfigError, match="set FITONFHIR_POSTGRES_URL"):
        PostgresUsersTable.from_settings(Settings.from_env({"FITONFHIR_HOME": str(tmp_path)}))
    bad = "host=db user=fitonfhir password=s3cr3t-pw"
    with pytest.raises(ConfigError, match="FITONFHIR_POSTGRES_URL must be a postgresql:// URL") as caught:
        open_users_table(Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_POSTGRES_URL": bad}))
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(caught.value))


def test_the_password_stays_out_of_reprs_logs_and_errors(
    postgres: PostgresServer, postgres_url, table_name, caplog, tmp_path
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_POSTGRES_URL": postgres_url})
    users = open_users_table(settings)
    user = users.upsert_onboarded(google_sub="sub-1", google_issuer=ISSUER, patient_id="p")
    users.set_state(user.key, UserState.REVOKED, "patient revoked consent")

    wrong = postgres_url.replace(postgres.password, "not-the-" + postgres.password)
    with pytest.raises(psycopg2.OperationalError) as caught:
        PostgresUsersTable(wrong, table=table_name)

    assert "password authentication failed" in str(caught.value)
    for text in (repr(settings), repr(users), caplog.text, "".join(traceback.format_exception(caught.value))):
        assert postgres.password not in text


def _users_connections(server: PostgresServer) -> int:
    conn = psycopg2.connect(server.url(), connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fitonfhir-users'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_a_server_restart_between_two_calls_is_survived_on_a_fresh_connection(
    postgres: PostgresServer, postgres_url: str, table_name: str, caplog
) -> None:
    """Pooled connections die with the server; the next call discards them and retries once on a fresh one
    (reads and writes alike), and no connection is leaked. A query error is not retried."""
    users = table(postgres_url, table_name, max_idle_connections=2)
    try:
        user = users.upsert_onboarded(google_sub="sub-r", google_issuer=ISSUER, patient_id="patient-r")
        assert users.get(user.key) == user  # the pool now holds an idle connection
        postgres.restart()
        with caplog.at_level(logging.WARNING, logger="fitonfhir_dagster.stores.postgres_users"):
            assert users.get(user.key) == user
        assert "connection was dropped; retrying once" in caplog.text
        postgres.restart()
        assert users.set_state(user.key, UserState.REVOKED, "test").state is UserState.REVOKED
        postgres.restart()
        again = users.upsert_onboarded(google_sub="sub-r", google_issuer=ISSUER, patient_id="patient-r")
        assert again.key == user.key and again.state is UserState.ACTIVE
        postgres.restart()
        assert [u.key for u in users.list()] == [user.key]
        assert _users_connections(postgres) <= 2
        # an error that is not a dropped connection propagates at once (no retry, the connection is kept)
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(psycopg2.errors.QueryCanceled):
            users._pool.run(lambda cur: cur.execute("SET LOCAL statement_timeout = 1; SELECT pg_sleep(1)"))
        assert "retrying" not in caplog.text
        assert users.get(user.key) is not None
    finally:
        users.close()
    assert _users_connections(postgres) == 0


def test_a_server_that_stays_down_fails_the_call_after_one_retry(
    postgres: PostgresServer, postgres_url: str, table_name: str
) -> None:
    users = table(postgres_url, table_name, connect_timeout=2)
    try:
        users.list()
        down = threading.Thread(target=postgres.restart, kwargs={"down_seconds": 3.0})
        down.start()
        try:
            import time

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # until the fast shutdown is done (the server is not back)
                try:
                    psycopg2.connect(postgres.url(), connect_timeout=2).close()
                except psycopg2.OperationalError:
                    break
                time.sleep(0.05)
            with pytest.raises(psycopg2.OperationalError):
                users.list()
        finally:
            down.join()
        assert users.list() == []
    finally:
        users.close()
