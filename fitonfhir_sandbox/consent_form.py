"""Reading the sandbox consent page like a browser would: its form action and input fields."""

from __future__ import annotations

from html.parser import HTMLParser


class ConsentForm(HTMLParser):
    """The first form's action and every named input (hidden fields and the e-mail box)."""

    def __init__(self, page_html: str = "") -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.action = ""
        if page_html:
            self.feed(page_html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.action:
            self.action = attr.get("action", "")
        elif tag == "input" and attr.get("name"):
            self.fields[attr["name"]] = attr.get("value", "")
