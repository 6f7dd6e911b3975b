"""`fitonfhir users list`: a header, the times an operator asks about, the last imported day; --json."""

from __future__ import annotations

import json

import dagster as dg
from click.testing import CliRunner

from fitonfhir_dagster.cli import main
from fitonfhir_dagster.stores.users import SqliteUsersTable, UserState


def _two_users(home):
    table = SqliteUsersTable(home / "users.sqlite3")
    first = table.upsert_onboarded(google_sub="1001", google_issuer="https://sandbox", patient_id="p-1")
    second = table.upsert_onboarded(google_sub="1002", google_issuer="https://sandbox", patient_id="p-2")
    table.set_state(second.key, UserState.REVOKED, "user_initiated")
    return first, table.get(second.key)


def test_the_table_has_a_header_and_the_last_imported_day_from_the_dagster_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("FITONFHIR_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    first, second = _two_users(tmp_path)
    with dg.DagsterInstance.get() as instance:
        for day in ("2026-11-19", "2026-11-21", "2026-11-20"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization("fhir_observations", partition=f"{day}|{first.key}")
            )

    done = CliRunner().invoke(main, ["users", "list"])
    assert done.exit_code == 0, done.output
    header, *lines = done.output.splitlines()
    assert header.split() == [
        "KEY",
        "STATE",
        "PATIENT",
        "ONBOARDED",
        "STATE_CHANGED",
        "LAST_IMPORTED_DAY",
        "REASON",
    ]
    by_key = {line.split()[0]: line for line in lines}
    assert "2026-11-21" in by_key[first.key] and "Patient/p-1" in by_key[first.key]
    assert "revoked" in by_key[second.key] and "user_initiated" in by_key[second.key]
    assert first.created_at in by_key[first.key]


def test_json_lines_carry_the_same_columns_and_no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("FITONFHIR_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "no-instance-yet"))
    first, second = _two_users(tmp_path)
    done = CliRunner().invoke(main, ["users", "list", "--json"])
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.output.splitlines()]
    assert {r["key"] for r in rows} == {first.key, second.key}
    assert all(r["last_imported_day"] == "" for r in rows)
    assert all("token" not in name for r in rows for name in r)
    assert {r["state"] for r in rows} == {"active", "revoked"}


def test_version():
    done = CliRunner().invoke(main, ["--version"])
    assert done.exit_code == 0 and done.output.startswith("fitonfhir, version ")
