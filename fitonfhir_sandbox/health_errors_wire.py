"""Google's v4 error envelope (``google.rpc.Status`` with an ``ErrorInfo`` detail), as the Health API sends it."""

from __future__ import annotations

import orjson

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
HEALTH_PREFIX = "/v4/"


def health_error(code: int, message: str, reason: str, status: str | None = None) -> bytes:
    body = {
        "error": {
            "code": code,
            "message": message,
            "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                    "metadata": {"service": "health.googleapis.com"},
                }
            ],
        }
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def fault_body(status: int) -> bytes:
    """The body of an injected ``status`` fault on a Health path."""
    if status == 429:
        return health_error(
            429, "Quota exceeded for quota metric 'Read requests' (sandbox fault).", "RATE_LIMIT_EXCEEDED"
        )
    if status >= 500:
        return health_error(status, "The service is currently unavailable (sandbox fault).", "BACKEND_ERROR")
    return health_error(status, "Request failed (sandbox fault).", "SANDBOX_FAULT")
