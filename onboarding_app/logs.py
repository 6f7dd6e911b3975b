"""Keep OAuth codes, state tokens and revoke tokens out of access logs: they travel in query strings."""

from __future__ import annotations

import logging


class DropQueryStrings(logging.Filter):
    """Cut ``?query`` from request paths in uvicorn's access-log arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a.split("?", 1)[0] if isinstance(a, str) and a.startswith("/") else a for a in record.args
            )
        return True


def install_log_redaction() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryStrings) for f in logger.filters):
        logger.addFilter(DropQueryStrings())
