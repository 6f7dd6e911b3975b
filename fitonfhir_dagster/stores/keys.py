"""Opaque identifiers and path-safe names shared by every store."""

from __future__ import annotations

import re
import secrets

USER_KEY_RE = re.compile(r"^u-[a-z0-9]{8,32}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")


def new_user_key() -> str:
    """A short random key (``u-`` + 10 base36 chars): no PII, safe as a Dagster partition key."""
    return "u-" + "".join(secrets.choice(_ALPHABET) for _ in range(10))


def check_user_key(key: str) -> str:
    if not isinstance(key, str) or not USER_KEY_RE.match(key):
        raise ValueError(f"not a valid user key: {key!r} (expected 'u-' followed by 8-32 of [a-z0-9])")
    return key


def safe_segment(segment: str) -> str:
    """Refuse anything that could escape a directory or confuse a blob name."""
    if not isinstance(segment, str) or not _SEGMENT_RE.match(segment) or ".." in segment:
        raise ValueError(f"unsafe path segment: {segment!r}")
    return segment
