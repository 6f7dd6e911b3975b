"""Which implementation serves a users row's ``source``."""

from __future__ import annotations

from ..stores.users import GOOGLE_FIT, GOOGLE_HEALTH
from .fit_source import GoogleFitSource
from .health_source import GoogleHealthSource
from .seam import Source


def source_named(name: str) -> Source:
    """The implementation of a users row's ``source``."""
    if name == GOOGLE_HEALTH:
        return GoogleHealthSource()
    if name == GOOGLE_FIT:
        return GoogleFitSource()
    raise ValueError(f"unknown data source {name!r}")
