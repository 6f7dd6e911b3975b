"""The archived user-day document, written and read back one page at a time.

The document is the JSON object it always was (any JSON reader reads it whole, ``load_datasets`` does);
only its line breaks are ours: every field but ``pages`` on the first line, then each stream's id and
each of its pages on a line of its own::

    {"user":"u-...","date":"...",...,"stats":{...},"pages":{
    "derived:com.google.heart_rate.bpm:...":[
    {"dataSourceId":...,"point":[...]}
    ,{"dataSourceId":...,"point":[...]}
    ]
    ,"derived:com.google.step_count.delta:...":[
    ]
    }}

So a heavy day (50k points, ~15 MB) is written from a spool of encoded pages and read back a page at a
time: parsed whole, its parse tree alone takes ~15 times the text, and its points ~1 KB each as Python
objects. A document in any other layout (Google Health days, archives written before this layout) is
read with one parse, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

_PAGES_OPEN = b',"pages":{\n'


class MalformedDocument(ValueError):
    """A document in the page-per-line layout whose lines do not follow it."""


def document_lines(header: dict[str, Any], streams: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """The lines of a document: ``header`` (every field but ``pages``, at least one) and, per stream in
    order, its id and its pages as JSON bytes (one line each, as orjson writes them)."""
    if not header or "pages" in header:
        raise ValueError("the header needs at least one field and no 'pages'")
    yield orjson.dumps(header)[:-1] + _PAGES_OPEN
    separator = b""
    for stream_id, pages in streams:
        yield separator + orjson.dumps(stream_id) + b":[\n"
        separator = b","
        first = b""
        for page in pages:
            yield first + page + b"\n"
            first = b","
        yield b"]\n"
    yield b"}}\n"


def read_document(lines: Iterable[bytes]) -> tuple[dict[str, Any], Iterator[tuple[str, dict[str, Any]]]]:
    """A document's fields but ``pages``, and its ``(stream id, page)`` in document order.

    Pages of the page-per-line layout are parsed one at a time as the iterator is consumed; any other
    document is parsed whole (its pages are then taken out of the header).
    """
    it = iter(lines)
    first = next(it, b"")
    if first.endswith(_PAGES_OPEN):
        return orjson.loads(first[: -len(_PAGES_OPEN)] + b"}"), _pages(it)
    document = orjson.loads(first + b"".join(it))
    pages: dict[str, list[dict[str, Any]]] = document.pop("pages", {}) or {}
    return document, ((stream, page) for stream, stream_pages in pages.items() for page in stream_pages)


def _pages(lines: Iterator[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    stream: str | None = None
    ended = False
    for number, line in enumerate(lines, start=2):
        body = line[1:] if line[:1] == b"," else line
        if stream is not None and body[:1] == b"{":
            yield stream, orjson.loads(body)
        elif stream is None and body[:1] == b'"' and body.endswith(b":[\n"):
            stream = orjson.loads(body[:-3])
        elif stream is not None and line == b"]\n":
            stream = None
        elif stream is None and line.rstrip(b"\n") == b"}}" and not ended:
            ended = True
        else:
            raise MalformedDocument(f"line {number} does not follow the page-per-line layout: {line[:60]!r}")
    if not ended:
        raise MalformedDocument("the document ends before its last line (cut short?)")
