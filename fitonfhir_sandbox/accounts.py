"""Sandbox Google accounts: a deterministic ``sub`` per e-mail, like Google's 21-digit subject ids."""

from __future__ import annotations

import hashlib
import re

DEFAULT_EMAIL = "sandbox.user@example.com"
HEAVY_MARKER = "+heavy"
_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")


class InvalidEmail(ValueError):
    """The consent form carried something that is not an e-mail address."""


def normalise_email(email: str) -> str:
    value = (email or "").strip().lower()
    if not _EMAIL_RE.match(value):
        raise InvalidEmail(f"not a valid e-mail address: {email!r}")
    return value


def sub_for_email(email: str) -> str:
    """Google subs are 21 decimal digits starting with 1; derive one from the e-mail's SHA-256."""
    digest = hashlib.sha256(normalise_email(email).encode("utf-8")).digest()
    return "1" + str(int.from_bytes(digest, "big") % 10**20).zfill(20)


HEAVY_POINTS_PER_DAY = 50_000
_HEAVY_RE = re.compile(re.escape(HEAVY_MARKER) + r"(\d*)")


def is_heavy_email(email: str) -> bool:
    """``name+heavy@...`` accounts get ~50k heart-rate points a day (benchmarks)."""
    return heavy_points_per_day(email) > 0


def heavy_points_per_day(email: str) -> int:
    """Heart-rate points a day of a heavy account, 0 for others: ``name+heavy@...`` gets
    ``HEAVY_POINTS_PER_DAY``, ``name+heavy100000@...`` 100,000 (benchmarks and memory tests)."""
    match = _HEAVY_RE.search(normalise_email(email).split("@", 1)[0])
    if match is None:
        return 0
    return int(match.group(1)) if match.group(1) else HEAVY_POINTS_PER_DAY
