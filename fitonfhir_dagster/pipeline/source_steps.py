"""Steps 1 and 2 for user-days that come from a source other than today's Fit path (issue 13).

``datasets.fetch_user_day`` and ``messages.build_user_day_messages`` hand such days here; the summaries
are the same, so the Dagster layer, checks and metadata do not know which source a user has.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from ..googlefit import fit_errors
from ..sources import SourceError, UserMustAct, source_named
from ..sources.health_source import first_values
from ..stores.users import User, UserState, source_for_day
from .datasets import DatasetsSummary, datasets_object
from .messages import MessagesSummary, Publisher, messages_object
from .ports import Ports
from .step_errors import TransientUserDayError, UserDayError, UserNotImportable


def fetch_from_source(ports: Ports, day: str, user: User) -> DatasetsSummary:
    """Fetch one user-day from the user's source for that day and archive it where Fit days go."""
    if user.state is not UserState.ACTIVE:
        raise UserNotImportable(user.key, day, f"user is {user.state.value}; they must onboard again")
    token = ports.vault.get(user.key)
    if not token:
        raise UserNotImportable(user.key, day, "no refresh token in the vault; the user must onboard again")
    source = source_named(source_for_day(user, day))
    the_day = date.fromisoformat(day)

    def store_rotated(new_token: str) -> None:
        ports.vault.put(user.key, new_token)

    try:
        documents = source.fetch_window(ports.settings, user, token, the_day, the_day, store_rotated)
    except fit_errors.ConsentRevoked as exc:
        ports.users.set_state(
            user.key, UserState.UNAUTHORIZED, reason="invalid_grant: consent revoked or expired"
        )
        raise UserNotImportable(
            user.key, day, f"Google refused the refresh token ({exc}); user marked unauthorized"
        ) from exc
    except UserMustAct as exc:
        ports.users.set_state(user.key, UserState.UNAUTHORIZED, reason=f"{source.name}: {exc}"[:500])
        raise UserNotImportable(user.key, day, f"{exc}; user marked unauthorized until they act") from exc
    except SourceError as exc:
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user.key, day, str(exc)) from exc
    except fit_errors.GoogleFitError as exc:  # token refresh problems other than invalid_grant
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user.key, day, f"{type(exc).__name__}: {exc}") from exc
    document = {"user": user.key, **documents[the_day]}
    ports.archive.put(datasets_object(day, user.key), orjson.dumps(document))
    return summarize_source_document(document, DatasetsSummary(user_key=user.key, day=day))


def summarize_source_document(document: dict[str, Any], summary: DatasetsSummary) -> DatasetsSummary:
    stats = document.get("stats", {})
    summary.streams = sum(1 for pages in document["pages"].values() if pages)
    summary.pages = sum(len(pages) for pages in document["pages"].values())
    summary.points = sum(source_named(document["source"]).points_by_type(document).values())
    summary.api_calls = int(stats.get("api_calls", 0))
    summary.bytes = int(stats.get("bytes", 0))
    summary.bad_points = len(document.get("badPoints", []))
    summary.dropped_outside_day = int(stats.get("outside_window", 0))
    summary.values_by_type = first_values(document)
    return summary


def messages_from_source(
    ports: Ports, day: str, user_key: str, document: dict[str, Any], publisher: Publisher | None
) -> MessagesSummary:
    """Device messages of an archived non-Fit user-day, checked to hold every point exactly once."""
    source = source_named(document["source"])
    user = ports.users.get(user_key)
    google_sub = user.google_sub if user else document["googleSub"]
    built = source.device_messages(document, google_sub)
    bodies = [m.body for m in built]
    payload = b"\n".join(bodies) + (b"\n" if bodies else b"")
    ports.archive.put(messages_object(day, user_key), payload)
    summary = MessagesSummary(user_key=user_key, day=day, messages=len(bodies), bytes=len(payload))
    summary.points = sum(m.points for m in built)
    if publisher is not None and bodies:
        stats = publisher.publish(bodies)
        summary.batches = int(getattr(stats, "batches", 0))
        summary.published = True
    fetched = source.point_identities(document)
    sent = source.message_point_identities([orjson.loads(b) for b in bodies])
    summary.missing_points = sum((fetched - sent).values())
    summary.duplicated_points = sum((sent - fetched).values())
    return summary
