"""Persistent emulator state: OAuth clients, accounts, grants, codes, tokens and the signing key.

Kept in SQLite under the sandbox home so a restarted sandbox still honours refresh tokens issued
earlier. Only SHA-256 hashes of codes and tokens are stored; all queries are parameterised.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ACCESS_TOKEN_SECONDS = 3599
CODE_SECONDS = 600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
  client_id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, redirect_uris TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (sub TEXT PRIMARY KEY, email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
  id INTEGER PRIMARY KEY AUTOINCREMENT, sub TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL,
  offline INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS grants_by_user ON grants (sub, client_id);
CREATE TABLE IF NOT EXISTS codes (
  code_sha256 TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, sub TEXT NOT NULL,
  scope TEXT NOT NULL, access_type TEXT NOT NULL, prompt TEXT NOT NULL, nonce TEXT,
  code_challenge TEXT, code_challenge_method TEXT, expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS tokens (
  token_sha256 TEXT PRIMARY KEY, kind TEXT NOT NULL, grant_id INTEGER NOT NULL REFERENCES grants (id),
  issued_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS tokens_by_grant ON tokens (grant_id);
CREATE TABLE IF NOT EXISTS signing_keys (kid TEXT PRIMARY KEY, private_pem TEXT NOT NULL, created_at REAL NOT NULL);
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Client:
    """A registered OAuth client; empty ``redirect_uris`` means the loopback callback policy."""

    client_id: str
    secret_sha256: str
    redirect_uris: tuple[str, ...] = ()

    def secret_matches(self, secret: str) -> bool:
        return secrets.compare_digest(self.secret_sha256, token_hash(secret))


@dataclass(frozen=True)
class CodeRecord:
    client_id: str
    redirect_uri: str
    sub: str
    scope: str
    access_type: str
    prompt: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class Grant:
    id: int
    sub: str
    email: str
    client_id: str
    scope: str
    offline: bool


@dataclass(frozen=True)
class TokenInfo:
    """What a live token stands for."""

    kind: str  # access | refresh
    grant: Grant
    expires_at: float | None


class SandboxState:
    """Thin repository over the SQLite file; every method opens its own short connection."""

    def __init__(self, db_path: Path, clock: Callable[[], float]) -> None:
        self.db_path = db_path
        self.clock = clock
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
        os.chmod(db_path, 0o600)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.db_path, timeout=10)) as db, db:
            db.row_factory = sqlite3.Row
            yield db

    # --- clients and accounts

    def register_client(self, client_id: str, secret: str, redirect_uris: tuple[str, ...] = ()) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO clients (client_id, secret_sha256, redirect_uris) VALUES (?, ?, ?) "
                "ON CONFLICT (client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, "
                "redirect_uris = excluded.redirect_uris",
                (client_id, token_hash(secret), json.dumps(list(redirect_uris))),
            )

    def client(self, client_id: str) -> Client | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM clients WHERE client_id = ?", (client_id,)).fetchone()
        if row is None:
            return None
        return Client(row["client_id"], row["secret_sha256"], tuple(json.loads(row["redirect_uris"])))

    def remember_account(self, sub: str, email: str) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO accounts (sub, email) VALUES (?, ?) ON CONFLICT (sub) DO UPDATE SET email = excluded.email",
                (sub, email),
            )

    def email_for_sub(self, sub: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT email FROM accounts WHERE sub = ?", (sub,)).fetchone()
        return None if row is None else str(row["email"])

    # --- authorization codes

    def issue_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        sub: str,
        scope: str,
        access_type: str,
        prompt: str,
        nonce: str | None,
        code_challenge: str | None,
        code_challenge_method: str | None,
    ) -> str:
        code = "4/0A" + secrets.token_urlsafe(48)
        with self._connect() as db:
            db.execute(
                "INSERT INTO codes (code_sha256, client_id, redirect_uri, sub, scope, access_type, prompt, nonce, "
                "code_challenge, code_challenge_method, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token_hash(code),
                    client_id,
                    redirect_uri,
                    sub,
                    scope,
                    access_type,
                    prompt,
                    nonce,
                    code_challenge,
                    code_challenge_method,
                    self.clock() + CODE_SECONDS,
                ),
            )
        return code

    def use_code(self, code: str) -> CodeRecord | None:
        """Mark a code used and return it; None when unknown, expired or already used (single use)."""
        now = self.clock()
        digest = token_hash(code)
        with self._connect() as db:
            row = db.execute("SELECT * FROM codes WHERE code_sha256 = ?", (digest,)).fetchone()
            if row is None or row["used_at"] is not None or row["expires_at"] <= now:
                return None
            updated = db.execute(
                "UPDATE codes SET used_at = ? WHERE code_sha256 = ? AND used_at IS NULL", (now, digest)
            ).rowcount
        if updated != 1:
            return None
        return CodeRecord(
            row["client_id"],
            row["redirect_uri"],
            row["sub"],
            row["scope"],
            row["access_type"],
            row["prompt"],
            row["nonce"],
            row["code_challenge"],
            row["code_challenge_method"],
            row["expires_at"],
            now,
        )

    # --- grants and tokens

    def active_grant(self, sub: str, client_id: str) -> Grant | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT g.*, a.email FROM grants g JOIN accounts a ON a.sub = g.sub "
                "WHERE g.sub = ? AND g.client_id = ? AND g.revoked_at IS NULL ORDER BY g.id DESC LIMIT 1",
                (sub, client_id),
            ).fetchone()
        return None if row is None else _grant(row)

    def save_grant(self, sub: str, client_id: str, scope: str, offline: bool) -> Grant:
        """Create the user's grant for this client, or widen the live one (scopes union, offline sticky)."""
        existing = self.active_grant(sub, client_id)
        with self._connect() as db:
            if existing is None:
                db.execute(
                    "INSERT INTO grants (sub, client_id, scope, offline, created_at) VALUES (?, ?, ?, ?, ?)",
                    (sub, client_id, scope, int(offline), self.clock()),
                )
            else:
                merged = existing.scope.split() + [
                    s for s in scope.split() if s not in existing.scope.split()
                ]
                db.execute(
                    "UPDATE grants SET scope = ?, offline = ? WHERE id = ?",
                    (" ".join(merged), int(offline or existing.offline), existing.id),
                )
        grant = self.active_grant(sub, client_id)
        assert grant is not None
        return grant

    def issue_token(self, grant_id: int, kind: str, lifetime: float | None) -> str:
        token = ("ya29.a0" if kind == "access" else "1//0g") + secrets.token_urlsafe(48)
        now = self.clock()
        with self._connect() as db:
            db.execute(
                "INSERT INTO tokens (token_sha256, kind, grant_id, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), kind, grant_id, now, None if lifetime is None else now + lifetime),
            )
        return token

    def token_info(self, token: str, kind: str) -> TokenInfo | None:
        """A live (known, unexpired, unrevoked, grant unrevoked) token of this kind, else None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT t.kind, t.expires_at AS token_expires, g.*, a.email FROM tokens t "
                "JOIN grants g ON g.id = t.grant_id JOIN accounts a ON a.sub = g.sub "
                "WHERE t.token_sha256 = ? AND t.kind = ? AND t.revoked_at IS NULL AND g.revoked_at IS NULL",
                (token_hash(token), kind),
            ).fetchone()
        if row is None or (row["token_expires"] is not None and row["token_expires"] <= self.clock()):
            return None
        return TokenInfo(row["kind"], _grant(row), row["token_expires"])

    def revoke_token(self, token: str) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE token_sha256 = ?", (self.clock(), token_hash(token))
            )

    def revoke_grant(self, grant_id: int) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE grants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (self.clock(), grant_id),
            )

    def grant_for_any_token(self, token: str) -> Grant | None:
        """The live grant behind an access or refresh token (for /revoke, which accepts either)."""
        for kind in ("access", "refresh"):
            info = self.token_info(token, kind)
            if info is not None:
                return info.grant
        return None

    def revoke_sub(self, sub: str) -> int:
        """Revoke every live grant of a Google account (the user removed the app); returns how many."""
        with self._connect() as db:
            return db.execute(
                "UPDATE grants SET revoked_at = ? WHERE sub = ? AND revoked_at IS NULL", (self.clock(), sub)
            ).rowcount

    # --- id_token signing key

    def signing_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        """The sandbox's RS256 key (created once per home, so id_tokens verify across restarts)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT kid, private_pem FROM signing_keys ORDER BY created_at LIMIT 1"
            ).fetchone()
            if row is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode("ascii")
                kid = hashlib.sha256(pem.encode()).hexdigest()[:40]
                db.execute(
                    "INSERT INTO signing_keys (kid, private_pem, created_at) VALUES (?, ?, ?)",
                    (kid, pem, self.clock()),
                )
                return kid, key
        loaded = serialization.load_pem_private_key(row["private_pem"].encode("ascii"), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        return str(row["kid"]), loaded


def _grant(row: sqlite3.Row) -> Grant:
    return Grant(row["id"], row["sub"], row["email"], row["client_id"], row["scope"], bool(row["offline"]))
