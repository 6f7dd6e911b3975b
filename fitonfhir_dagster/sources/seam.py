"""The :class:`Source` protocol and the registry of its implementations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any, Protocol

from ..fitmapping.device_messages import DeviceMessage
from ..settings import Settings
from ..stores.users import User

OnRefreshToken = Callable[[str], None]


class SourceError(RuntimeError):
    """A source could not deliver a window; ``retryable`` says whether later can succeed."""

    retryable = False


class UserMustAct(SourceError):
    """Only the user can fix this (e.g. Google Health not set up: ACCOUNT_NOT_LINKED); not retried."""


class Source(Protocol):
    """A user's data for a window of UTC days: archive documents (one per day) and device messages."""

    name: str

    def fetch_window(
        self,
        settings: Settings,
        user: User,
        refresh_token: str,
        first_day: date,
        last_day: date,
        on_refresh_token: OnRefreshToken,
    ) -> dict[date, dict[str, Any]]:
        """One JSON-ready archive document per day of ``[first_day, last_day]``; each carries ``source``,
        ``pages``, ``badPoints`` and ``stats``. Raises googlefit's ``ConsentRevoked`` on invalid_grant,
        :class:`UserMustAct` when the user has to act, :class:`SourceError` otherwise."""
        ...

    def device_messages(self, document: dict[str, Any], google_sub: str) -> list[DeviceMessage]:
        """The MedTech device messages of one archived user-day."""
        ...

    def point_identities(self, document: dict[str, Any]) -> Counter[tuple[Any, ...]]:
        """Every archived point once per occurrence, to check the messages hold each exactly once."""
        ...

    def message_point_identities(self, messages: list[DeviceMessage]) -> Counter[tuple[Any, ...]]: ...

    def points_by_type(self, document: dict[str, Any]) -> Counter[str]: ...
