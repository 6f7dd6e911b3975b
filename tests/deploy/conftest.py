"""Deployment tests run the production instance configuration on a real throw-away PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, postgres_session


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session; fails (never skips) when its binaries are missing."""
    yield from postgres_session()
