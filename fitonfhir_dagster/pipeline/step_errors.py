"""Per user-day failures, with whether a retry can help."""

from __future__ import annotations


class UserDayError(RuntimeError):
    retryable = False

    def __init__(self, user_key: str, day: str, message: str) -> None:
        super().__init__(f"{day}|{user_key}: {message}")
        self.user_key = user_key
        self.day = day
        self.message = message

    def for_day(self, day: str) -> UserDayError:
        """The same failure reported for another day of the same user (a window fetch failed)."""
        return self if day == self.day else type(self)(self.user_key, day, self.message)


class UserNotImportable(UserDayError):
    """Unknown user, missing refresh token, or consent revoked at Google: re-running will not help."""


class UpstreamMissing(UserDayError):
    """The previous step's archive object for this user-day does not exist yet."""


class TransientUserDayError(UserDayError):
    retryable = True
