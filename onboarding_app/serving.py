"""Run the app with uvicorn: in the foreground (``fitonfhir onboarding serve``) or in a background
thread on a pre-bound socket (tests and demos, so the public URL is known before the app is built)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from .logs import install_log_redaction


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket (port 0: a free one) for uvicorn, which listens on it when it starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def server_config(app: Any, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    install_log_redaction()
    return uvicorn.Config(app, host=host, port=port, proxy_headers=False, server_header=False, **kwargs)


@contextmanager
def serve_in_background(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """Serve ``app`` on ``sock`` (a free loopback port by default) until the block ends; yields its URL."""
    sock = sock or bind_socket()
    host, port = sock.getsockname()[:2]
    config = server_config(app, host, port, log_config=None, lifespan="off")
    with run_in_thread(config, sock, name="onboarding") as url:
        yield url


@contextmanager
def run_in_thread(
    config: uvicorn.Config, sock: socket.socket, *, name: str, startup_timeout: float = 10.0
) -> Iterator[str]:
    """Run a uvicorn server on a bound ``sock`` in a daemon thread until the block ends; yields its URL.

    The one way this repository serves an app in the background (the onboarding app here, the sandbox in
    ``fitonfhir_sandbox.handle``); ``sock`` is closed at the end."""
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"fitonfhir-{name}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} server did not start")
            time.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
