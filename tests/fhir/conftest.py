"""Real servers for the FHIR tests: the sandbox FHIR app under uvicorn, and Medplum's fhir-router in Node."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from fitonfhir_dagster.fhir import FhirClient
from fitonfhir_sandbox.fhir_server import create_fhir_app

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
MEDPLUM_SERVER = NODE_DIR / "medplum_server.mjs"


@contextmanager
def serve(app) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port (port 0) in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def serve_app():
    """``with serve_app(app) as url:`` runs any ASGI app on a free port for the block."""
    return serve


@pytest.fixture
def sandbox_fhir_url(tmp_path: Path) -> Iterator[str]:
    with serve(create_fhir_app(tmp_path / "fhir.db")) as url:
        yield url


@pytest.fixture(scope="session")
def medplum_url() -> Iterator[str]:
    """Medplum 4.5.2 fhir-router over its in-memory repository, one process per test session."""
    process = subprocess.Popen(
        ["node", str(MEDPLUM_SERVER), "0"],
        cwd=NODE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            process.kill()
            raise RuntimeError(f"Medplum oracle did not start: {line!r} {process.stderr.read()[-2000:]}")
        yield f"http://127.0.0.1:{line}"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class ServerUnderTest:
    name: str
    url: str

    def client(self, **kwargs) -> FhirClient:
        kwargs.setdefault("bundle_size", 20)  # Medplum caps transactions at 50 updates
        kwargs.setdefault("timeout", 30)
        return FhirClient(self.url, **kwargs)


@pytest.fixture(params=["sandbox", "medplum"])
def fhir_server(request) -> ServerUnderTest:
    """The same scenario against our sandbox and against Medplum (the independent oracle)."""
    if request.param == "sandbox":
        return ServerUnderTest("sandbox", request.getfixturevalue("sandbox_fhir_url"))
    return ServerUnderTest("medplum", request.getfixturevalue("medplum_url"))
