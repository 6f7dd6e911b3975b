"""The one session factory: a pool sized for the import's worker threads and a User-Agent naming us."""

from __future__ import annotations

from importlib import metadata

import pytest

from fitonfhir_dagster.fhir.fhir_errors import FhirError
from fitonfhir_dagster.http.sessions import DEFAULT_POOL_SIZE, new_session


def test_a_new_session_names_the_project_and_its_version():
    agent = new_session().headers["User-Agent"]
    assert agent.startswith(f"fitonfhir-dagster/{metadata.version('fitonfhir-dagster')} ")


def test_the_pool_holds_a_connection_per_worker_thread():
    session = new_session()
    for prefix in ("http://", "https://"):
        assert session.get_adapter(prefix + "example.org")._pool_maxsize == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]
    assert new_session(pool_size=2).get_adapter("https://x")._pool_maxsize == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="pool_size"):
        new_session(pool_size=0)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_fhir_errors_are_retryable_on_the_one_set_of_statuses(status):
    assert FhirError(status, "GET", "Patient/p1").retryable


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
def test_fhir_client_errors_are_not_retryable(status):
    assert not FhirError(status, "GET", "Patient/p1").retryable
