"""What every step needs from the outside world, built once per run from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..stores.archive import Archive
from ..stores.factory import open_archive, open_users_table, open_vault
from ..stores.users import UsersTable
from ..stores.vault import TokenVault


@dataclass(frozen=True)
class Ports:
    settings: Settings
    users: UsersTable
    vault: TokenVault
    archive: Archive

    @classmethod
    def open(cls, settings: Settings) -> Ports:
        return cls(settings, open_users_table(settings), open_vault(settings), open_archive(settings))
