"""OAuth ``state``: a signed, expiring, single-use handle on caller data kept server-side.

The token sent to Google is ``<nonce>.<hmac>``; everything else (who the patient is, where to send
the browser back, the PKCE verifier) stays in a small SQLite table and is deleted when the callback
consumes it, so a replayed state finds nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

STATE_LIFETIME = timedelta(minutes=5)
_NONCE_BYTES = 24


class StateError(Exception):
    """The callback's state cannot be trusted; ``reason`` is a short code safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PendingAuthorization:
    """What the authorize call knew, needed again by the callback."""

    external_system: str
    external_id: str
    redirect_url: str
    caller_state: str | None
    code_verifier: str
    anonymous: bool


def load_state_secret(configured: str, home: Path) -> bytes:
    """The configured key, or a random key persisted 0600 under ``home`` on first use."""
    if configured:
        return configured.encode()
    path = home / "onboarding" / "state.key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.urlsafe_b64encode(secrets.token_bytes(32)))
    return path.read_bytes().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class StateStore:
    """Issues and consumes state tokens; rows live in ``<home>/onboarding/state.sqlite3``."""

    def __init__(self, path: Path, secret: bytes, lifetime: timedelta = STATE_LIFETIME) -> None:
        if len(secret) < 16:
            raise ValueError("the state signing key must be at least 16 bytes (FITONFHIR_STATE_SECRET)")
        self.path = path
        self.lifetime = lifetime
        self._secret = secret
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS pending_state ("
                " nonce TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at TEXT NOT NULL)"
            )
        os.chmod(path, 0o600)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def _sign(self, nonce: str) -> str:
        return _b64(hmac.new(self._secret, b"fitonfhir-state:" + nonce.encode(), hashlib.sha256).digest())

    def issue(self, pending: PendingAuthorization, now: datetime | None = None) -> tuple[str, datetime]:
        """Store ``pending`` and return the signed token plus its expiry (UTC)."""
        now = now or datetime.now(UTC)
        expires_at = now + self.lifetime
        nonce = _b64(secrets.token_bytes(_NONCE_BYTES))
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM pending_state WHERE expires_at < ?", (now.isoformat(),))
            db.execute(
                "INSERT INTO pending_state (nonce, data, expires_at) VALUES (?, ?, ?)",
                (nonce, json.dumps(asdict(pending)), expires_at.isoformat()),
            )
        return f"{nonce}.{self._sign(nonce)}", expires_at

    def consume(self, token: str | None, now: datetime | None = None) -> PendingAuthorization:
        """Return the pending authorization once; a forged, unknown, replayed or expired token raises."""
        if not token:
            raise StateError("missing_state", "The callback has no state parameter.")
        nonce, dot, signature = token.partition(".")
        if not dot or not nonce or not hmac.compare_digest(signature.encode(), self._sign(nonce).encode()):
            raise StateError("invalid_state", "The state parameter is not one this service issued.")
        with self._lock, self._connect() as db:
            row = db.execute(
                "DELETE FROM pending_state WHERE nonce = ? RETURNING data, expires_at", (nonce,)
            ).fetchone()
        if row is None:
            raise StateError("used_state", "This authorization was already completed or is unknown.")
        if datetime.fromisoformat(row[1]) <= (now or datetime.now(UTC)):
            raise StateError(
                "expired_state",
                "The authorization attempt failed because it was not completed within the maximum, "
                "5 minute period.",
            )
        return PendingAuthorization(**json.loads(row[0]))
