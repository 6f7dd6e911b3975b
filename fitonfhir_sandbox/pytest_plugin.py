"""pytest fixtures for tests that talk to the sandbox (load with ``pytest_plugins``).

``sandbox`` is a real sandbox server (Google OAuth + Fit REST + FHIR R4) on a free loopback port, shared
by the tests of one module; ``fresh_sandbox`` is the same server with no fault rules and no refresh-token
rotation left over from an earlier test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fitonfhir_sandbox.handle import SandboxHandle, running_sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox")) as handle:
        yield handle


@pytest.fixture
def fresh_sandbox(sandbox: SandboxHandle) -> Iterator[SandboxHandle]:
    sandbox.clear_faults()
    sandbox.set_refresh_rotation(False)
    yield sandbox
    sandbox.clear_faults()
    sandbox.set_refresh_rotation(False)
