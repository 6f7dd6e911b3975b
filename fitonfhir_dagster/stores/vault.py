"""Refresh-token vault: encrypted files by default, Azure Key Vault in production."""

from __future__ import annotations

import os
import tempfile
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


def _private_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh 0600 file next to ``path`` whose name no other writer uses."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def _write_private(path: Path, data: bytes) -> None:
    os.replace(_private_temp(path, data), path)


def _create_private_once(path: Path, data: bytes) -> bytes:
    """Create ``path`` holding ``data`` unless it exists; either way return what ``path`` holds.

    The complete file appears at once (hard link of a private temp file), so concurrent first users
    all end up reading the single winner's content, never a half-written or a second key."""
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        tmp.unlink()
    return path.read_bytes()


class LocalTokenVault:
    """One Fernet-encrypted file per user (mode 0600); the key comes from FITONFHIR_VAULT_KEY or a
    0600 key file created on first use."""

    def __init__(self, directory: Path | str, key: str = "") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fernet = Fernet(key.encode() if key else self._key_from_file())

    def _key_from_file(self) -> bytes:
        key_file = self.directory / "vault.key"
        if key_file.exists():
            return key_file.read_bytes().strip()
        return _create_private_once(key_file, Fernet.generate_key()).strip()

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
