"""Store tests run against real stand-ins: one Azurite process per test session (see tests/support/azurite.py)
and one throw-away PostgreSQL cluster (tests/support/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.azurite import Azurite, running_azurite
from tests.support.postgres import PostgresServer, postgres_session


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite")) as handle:
        yield handle


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session; fails (never skips) when its binaries are missing."""
    yield from postgres_session()


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresServer) -> str:
    """One database for the store tests; each test uses a table of its own."""
    return postgres.create_database("fitonfhir_stores")
