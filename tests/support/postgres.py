"""The throw-away PostgreSQL cluster of the tests: the implementation is ``fitonfhir_sandbox.postgres``
(shared with ``fitonfhir stack``); this module adds the pytest session fixture body.

    with running_postgres() as pg:
        url = pg.create_database("users_test")  # postgresql://fitonfhir:...@127.0.0.1:PORT/users_test
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fitonfhir_sandbox.postgres import (  # noqa: F401 (re-exported for the tests)
    MISSING,
    SUPERUSER,
    SYSTEM_USER,
    PostgresServer,
    find_bindir,
    free_port,
    running_postgres,
)


def postgres_session() -> Iterator[PostgresServer]:
    """Body of a session fixture: a missing or broken PostgreSQL fails the tests with the reason (no skip)."""
    import pytest

    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(running_postgres())
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with stack:
        yield server
