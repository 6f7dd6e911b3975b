"""What every step reads and writes besides its clients: the settings and the three stores.

The FHIR client and the Event Hub publisher are not here: only one step each needs them, so they are
passed to that step (and opened only when it is selected).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..stores.archive import Archive
from ..stores.factory import open_archive, open_users_table, open_vault
from ..stores.users import UsersTable
from ..stores.vault import TokenVault


@dataclass(frozen=True)
class StepStores:
    settings: Settings
    users: UsersTable
    vault: TokenVault
    archive: Archive

    @classmethod
    def open(cls, settings: Settings) -> StepStores:
        return cls(settings, open_users_table(settings), open_vault(settings), open_archive(settings))
