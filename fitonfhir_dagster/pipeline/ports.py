"""What every step needs from the outside world, built once per run from Settings."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..stores.archive import Archive
from ..stores.users import UsersTable
from ..stores.vault import TokenVault


@dataclass(frozen=True)
class Ports:
    settings: Settings
    users: UsersTable
    vault: TokenVault
    archive: Archive
