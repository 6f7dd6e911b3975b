"""The archived user-day document: one JSON object, written and read back a page per line."""

import orjson
import pytest

from fitonfhir_dagster.pipeline.day_document import MalformedDocument, document_lines, read_document

HEADER = {"user": "u-abc", "date": "2025-01-01", "sources": [{"dataStreamId": "a"}], "stats": {"pages": 3}}
PAGES = {
    "a": [{"dataSourceId": "a", "point": [{"startTimeNanos": 1}]}, {"dataSourceId": "a", "point": []}],
    'b:with "quotes",\n and a newline': [],
    "c": [{"dataSourceId": "c", "point": [{"startTimeNanos": 2, "value": [{"fpVal": 1.5}]}]}],
}


def _lines():
    return list(document_lines(HEADER, ((s, (orjson.dumps(p) for p in pages)) for s, pages in PAGES.items())))


def test_the_document_is_one_json_object_with_the_same_content():
    lines = _lines()
    assert orjson.loads(b"".join(lines)) == {**HEADER, "pages": PAGES}
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)


def test_pages_are_read_back_one_at_a_time_in_document_order():
    header, pages = read_document(iter(_lines()))
    assert header == HEADER
    assert list(pages) == [(s, p) for s, stream_pages in PAGES.items() for p in stream_pages]


def test_a_document_in_any_other_layout_is_read_with_one_parse():
    for raw in (
        orjson.dumps({**HEADER, "pages": PAGES}),
        orjson.dumps({**HEADER, "pages": PAGES}, option=orjson.OPT_INDENT_2),
    ):
        header, pages = read_document(iter(raw.splitlines(keepends=True)))
        assert header == HEADER
        assert list(pages) == [(s, p) for s, stream_pages in PAGES.items() for p in stream_pages]


def test_a_document_cut_short_fails_instead_of_losing_pages_silently():
    header, pages = read_document(iter(_lines()[:-2]))
    with pytest.raises(MalformedDocument, match="cut short"):
        list(pages)
    lines = _lines()
    lines.insert(2, b"not json\n")
    with pytest.raises(MalformedDocument, match="line 3"):
        list(read_document(iter(lines))[1])
