"""Errors of the Google Health client, sorted by what the caller should do about them.

Token refresh is shared with the Fit client, so its errors (``ConsentRevoked``, ``TransientFitError``,
``TokenRefreshFailed``) come from :mod:`fitonfhir_dagster.googlefit.fit_errors` unchanged.
"""

from __future__ import annotations


class GoogleHealthError(RuntimeError):
    """Base class of every error raised by the Google Health client."""

    retryable = False

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # google.rpc.ErrorInfo reason, e.g. ACCOUNT_NOT_LINKED


class AccountNotLinked(GoogleHealthError):
    """The Google account has no Google Health data (``ACCOUNT_NOT_LINKED``): the user must set up
    Google Health (or consent again); retrying cannot help."""


class HealthPermissionDenied(GoogleHealthError):
    """403: a googlehealth scope was not granted. Not retried."""


class HealthRequestError(GoogleHealthError):
    """Any other 4xx (e.g. an ``INVALID_DATA_POINT_FILTER_*`` reason): the request is wrong. Not retried."""


class HealthUnauthorized(GoogleHealthError):
    """401 even with a freshly refreshed access token."""


class TransientHealthError(GoogleHealthError):
    """429/5xx/timeouts through every retry; try again later."""

    retryable = True


class MalformedHealthResponse(GoogleHealthError):
    """The answer does not have the structure the discovery document describes."""
