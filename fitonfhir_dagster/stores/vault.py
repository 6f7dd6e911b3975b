"""Refresh-token vault: encrypted files by default, Azure Key Vault in production."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from .keys import check_user_key


class VaultError(RuntimeError):
    pass


class TokenVault(Protocol):
    def put(self, user_key: str, refresh_token: str) -> None: ...

    def get(self, user_key: str) -> str | None: ...

    def delete(self, user_key: str) -> None: ...


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class LocalTokenVault:
    """One Fernet-encrypted file per user (mode 0600); the key comes from FITONFHIR_VAULT_KEY or a
    0600 key file created on first use."""

    def __init__(self, directory: Path | str, key: str = "") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fernet = Fernet(key.encode() if key else self._key_from_file())

    def _key_from_file(self) -> bytes:
        key_file = self.directory / "vault.key"
        if not key_file.exists():
            _write_private(key_file, Fernet.generate_key())
        return key_file.read_bytes().strip()

    def _path(self, user_key: str) -> Path:
        return self.directory / f"{check_user_key(user_key)}.token"

    def put(self, user_key: str, refresh_token: str) -> None:
        if not refresh_token:
            raise VaultError("refusing to store an empty refresh token")
        _write_private(self._path(user_key), self._fernet.encrypt(refresh_token.encode()))

    def get(self, user_key: str) -> str | None:
        path = self._path(user_key)
        if not path.exists():
            return None
        try:
            return self._fernet.decrypt(path.read_bytes()).decode()
        except InvalidToken as exc:
            raise VaultError(
                f"vault entry for {user_key} cannot be decrypted with the configured key"
            ) from exc

    def delete(self, user_key: str) -> None:
        self._path(user_key).unlink(missing_ok=True)
