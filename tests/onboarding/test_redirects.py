"""Redirect URLs must equal an approved entry exactly; parameters are added without clobbering."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from onboarding_app.redirects import RedirectAllowList, with_query

APPROVED = "https://app.example.org/fit/done"
ALLOW = RedirectAllowList([APPROVED, "https://other.example.org/cb?x=1"])


def test_an_approved_url_is_allowed():
    assert APPROVED in ALLOW
    assert "https://other.example.org/cb?x=1" in ALLOW


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.org/fit/done/",  # trailing slash
        "https://app.example.org/fit/done/../evil",  # path continuation
        "https://app.example.org/fit/doneX",  # prefix
        "https://app.example.org/fit/done?next=https://evil.example",  # extra query
        "https://app.example.org/fit/done#x",  # fragment
        "HTTPS://APP.EXAMPLE.ORG/fit/done",  # case
        "https://app.example.org/FIT/done",  # path case
        "https://app.example.org.evil.example/fit/done",  # host suffix
        "https://user@app.example.org/fit/done",  # user info
        "https://app.example.org:443/fit/done",  # explicit port
        "https://app.example.org/fit/%64one",  # percent-encoding
        "http://app.example.org/fit/done",  # scheme downgrade
        " https://app.example.org/fit/done",  # whitespace
        "//app.example.org/fit/done",  # scheme-relative
        "",
    ],
)
def test_look_alike_urls_are_refused(url):
    assert url not in ALLOW


def test_an_empty_setting_approves_nothing():
    assert len(RedirectAllowList(["", ""])) == 0


def test_parameters_are_added_to_the_existing_query():
    url = with_query("https://other.example.org/cb?x=1&y=", state="s 1&2", error="access_denied")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "other.example.org", "/cb")
    assert parse_qsl(parts.query, keep_blank_values=True) == [
        ("x", "1"),
        ("y", ""),
        ("state", "s 1&2"),
        ("error", "access_denied"),
    ]


def test_the_caller_cannot_preseed_our_parameters():
    url = with_query("https://a.example/cb?state=old&error=fake", state="new", error=None)
    assert parse_qsl(urlsplit(url).query) == [("state", "new")]
