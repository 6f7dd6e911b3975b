"""Where the browser may be sent back to: an exact allow-list, and adding query parameters safely."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class RedirectAllowList:
    """Exact, case-sensitive string match: no normalisation, so prefix, case, trailing-slash,
    user-info or encoding variants of an approved URL are all refused."""

    def __init__(self, urls: Iterable[str]) -> None:
        self._urls = frozenset(u for u in urls if u)

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and url in self._urls

    def __len__(self) -> int:
        return len(self._urls)


def with_query(url: str, **params: str | None) -> str:
    """``url`` with ``params`` added (``None`` values left out), keeping its existing query and
    replacing parameters of the same name so a caller cannot pre-seed ``error`` or ``state``."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    added = [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(kept + added)))
