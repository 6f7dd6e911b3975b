"""Errors of the Google Fit client, sorted by what the caller should do about them.

``retryable`` tells an orchestrator whether running the same work again later can succeed.
Messages name the stream/page/point involved but never carry tokens.
"""

from __future__ import annotations


class GoogleFitError(RuntimeError):
    """Base class of every error raised by the Google Fit client."""

    retryable = False


class ConsentRevoked(GoogleFitError):
    """Google answered ``invalid_grant``: the refresh token is revoked or expired.

    Not retried; the caller marks the user ``unauthorized`` and stops scheduling them until they consent again.
    """


class TokenRefreshFailed(GoogleFitError):
    """The token endpoint rejected the refresh for a reason other than ``invalid_grant``
    (e.g. ``invalid_client``): a configuration problem, not retried."""


class RefreshTokenStoreFailed(GoogleFitError):
    """The ``on_refresh_token`` callback failed, so the rotated refresh token was not used."""


class TransientFitError(GoogleFitError):
    """Google stayed unavailable (429/5xx/timeouts/connection errors) through every retry; try again later."""

    retryable = True


class FitUnauthorized(GoogleFitError):
    """Google answered 401 even with a freshly refreshed access token."""


class FitPermissionDenied(GoogleFitError):
    """403: a scope was not granted or the API is not enabled. Not retried."""


class FitNotFound(GoogleFitError):
    """404: e.g. the data source was deleted. Not retried."""


class FitRequestError(GoogleFitError):
    """Any other 4xx answer: the request itself is wrong. Not retried."""


class MalformedResponse(GoogleFitError):
    """Google's answer does not have the structure the API documents."""


class MalformedDataset(MalformedResponse):
    """A dataset page (or one point of it) is malformed; the message names stream, page, point and field."""


class ResponseNotJson(MalformedDataset):
    """A 200 body that does not parse, as when a connection is cut mid-body.

    Retryable: the client re-fetches it like a 5xx inside its bounded retries and, if it stays
    unreadable, raises :class:`TransientFitError`; malformed points stay permanent.
    """

    retryable = True
