"""Start the real Azurite emulator (Azure Blob/Queue/Table storage) on loopback for tests.

Azurite binds port 0 for each service and prints the port it got, so parallel test runs never race for a
port. Data is kept in memory (Azurite 3.35 refuses ``--location`` together with ``--inMemoryPersistence``,
so the process runs with the work directory as its cwd instead and nothing is written there).

    with running_azurite(tmp_path) as azurite:
        TableServiceClient.from_connection_string(azurite.connection_string)
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCOUNT_NAME = "devstoreaccount1"
# Azurite's well-known development account key (public, documented by Microsoft; not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

AZURITE_BIN = Path(__file__).resolve().parents[1] / "node" / "node_modules" / ".bin" / "azurite"
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at (http://\S+)")


@dataclass(frozen=True)
class Azurite:
    blob_url: str  # e.g. http://127.0.0.1:41234/devstoreaccount1
    queue_url: str
    table_url: str

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};TableEndpoint={self.table_url};"
        )


def _drain(stream, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def _wait_accepting(url: str, deadline: float) -> None:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def running_azurite(workdir: Path, *, startup_timeout: float = 30.0) -> Iterator[Azurite]:
    """Run one Azurite process (blob, queue and table services) for the duration of the block."""
    if not AZURITE_BIN.exists():
        raise RuntimeError(
            f"Azurite not installed at {AZURITE_BIN}: run `make test-deps` (npm ci in tests/node)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        str(AZURITE_BIN),
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--silent",
        "--inMemoryPersistence",
    ]
    args += ["--extentMemoryLimit", "256"]
    for service in ("blob", "queue", "table"):
        args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", "0"]
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True, name="azurite-output").start()
    try:
        deadline = time.monotonic() + startup_timeout
        seen: list[str] = []
        urls: dict[str, str] = {}
        while len(urls) < 3:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                output = "\n".join(seen)
                raise RuntimeError(f"Azurite did not start (exit code {proc.poll()}); its output:\n{output}")
            try:
                line = lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                urls[match.group(1).lower()] = match.group(2).rstrip("/") + "/" + ACCOUNT_NAME
        for url in urls.values():
            _wait_accepting(url, deadline)
        yield Azurite(blob_url=urls["blob"], queue_url=urls["queue"], table_url=urls["table"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
