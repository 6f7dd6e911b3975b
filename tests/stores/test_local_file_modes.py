"""The local stores hold health data and the account-to-patient links: other local users of the machine
must not read them, whatever the umask (tests run under the common 0o022, which would give 0644/0755)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fitonfhir_dagster.stores.archive import LocalArchive, object_name
from fitonfhir_dagster.stores.users import SqliteUsersTable

KEY = "u-abcdefgh01"


@pytest.fixture(autouse=True)
def common_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_archive_directories_are_0700_and_objects_0600(tmp_path: Path) -> None:
    root = tmp_path / "home" / "archive"
    archive = LocalArchive(root)
    name = object_name("fit-datasets", "2024-01-01", KEY, "heart_rate.json")
    archive.put(name, b'{"point": []}')
    archive.put(name, b'{"point": [1]}')  # replacing an object keeps it private

    assert mode(tmp_path / "home") == 0o700
    assert mode(root) == 0o700
    directory = root
    for segment in name.split("/")[:-1]:
        directory = directory / segment
        assert mode(directory) == 0o700, directory
    assert mode(root / name) == 0o600
    assert archive.get(name) == b'{"point": [1]}'
    assert list(archive.list()) == [name]  # no temporary file left behind


def test_users_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "home" / "users.sqlite3"
    users = SqliteUsersTable(path)
    reader = sqlite3.connect(path)  # an open reader keeps the -wal/-shm files SQLite creates
    try:
        reader.execute("SELECT count(*) FROM users").fetchall()
        users.upsert_onboarded(
            google_sub="1000", google_issuer="https://accounts.google.com", patient_id="p-1"
        )

        assert mode(path.parent) == 0o700
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        reader.close()


def test_a_users_database_left_readable_by_an_earlier_version_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite3"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.commit()
    assert mode(path) == 0o644 and mode(Path(f"{path}-wal")) == 0o644

    SqliteUsersTable(path)

    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert mode(file) == 0o600, file
    old.close()
