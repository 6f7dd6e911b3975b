"""Step 1: fetch one user's Google Fit datasets for one UTC day and archive them unchanged."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from ..googlefit import fit_errors
from ..googlefit.fit_client import DayFetch, GoogleFitClient, select_streams
from ..stores.archive import object_name
from ..stores.users import GOOGLE_FIT, User, UserState, source_for_day
from .ports import Ports
from .step_errors import TransientUserDayError, UserDayError, UserNotImportable

KIND = "fit_datasets"
OBJECT = "datasets.json"


@dataclass
class DatasetsSummary:
    user_key: str
    day: str
    streams: int = 0
    pages: int = 0
    points: int = 0
    api_calls: int = 0
    bytes: int = 0
    bad_points: int = 0
    outside_day: int = 0  # archived points whose start lies outside the partition day (must stay 0)
    dropped_outside_day: int = 0  # overlapping points Google returned that belong to the neighbour day
    duplicates: int = 0  # identical points seen on several pages, kept once
    supplied_fields: int = 0  # fields Google left out, filled in from the request (see suppliedFields)
    values_by_type: dict[str, list[float]] = field(default_factory=dict)


def datasets_object(day: str, user_key: str) -> str:
    return object_name(KIND, day, user_key, OBJECT)


def load_datasets(ports: Ports, day: str, user_key: str) -> dict[str, Any] | None:
    raw = ports.archive.get(datasets_object(day, user_key))
    return orjson.loads(raw) if raw is not None else None


def _importable_user(ports: Ports, user_key: str, day: str) -> User:
    user = ports.users.get(user_key)
    if user is None:
        raise UserNotImportable(user_key, day, "no such user in the users table")
    return user


def fetch_user_day(ports: Ports, day: str, user_key: str) -> DatasetsSummary:
    user = _importable_user(ports, user_key, day)
    if source_for_day(user, day) != GOOGLE_FIT:  # issue 13: other sources go through the source seam
        from .source_steps import fetch_from_source

        return fetch_from_source(ports, day, user)
    if user.state is not UserState.ACTIVE:
        raise UserNotImportable(user_key, day, f"user is {user.state.value}; they must onboard again")
    token = ports.vault.get(user_key)
    if not token:
        raise UserNotImportable(user_key, day, "no refresh token in the vault; the user must onboard again")
    try:
        fetched, sources = _fetch(ports, day, user_key, token)
    except fit_errors.ConsentRevoked as exc:
        current = ports.vault.get(user_key)
        if not current or current == token:
            raise _unauthorized(ports, user_key, day, exc) from exc
        try:  # another run rotated the refresh token after we read it: once more with the new one
            fetched, sources = _fetch(ports, day, user_key, current)
        except fit_errors.ConsentRevoked as again:
            raise _unauthorized(ports, user_key, day, again) from again

    document = {
        "user": user_key,
        "date": day,
        "googleSub": user.google_sub,
        "window": {"startNs": fetched.start_ns, "endNs": fetched.end_ns},
        "sources": sources,
        "pages": {stream: [p.dataset for p in pages] for stream, pages in fetched.streams.items()},
        "badPoints": [
            {"stream": p.stream_id, "page": p.page_index, "reason": bad.reason, "point": bad.point}
            for p in fetched.pages
            for bad in p.bad_points
        ],
        "suppliedFields": [
            {"stream": p.stream_id, "page": p.page_index, "fields": p.supplied_fields}
            for p in fetched.pages
            if p.supplied_fields
        ],
        "stats": fetched.stats.as_dict(),
    }
    ports.archive.put(datasets_object(day, user_key), orjson.dumps(document))
    return summarize(document, DatasetsSummary(user_key=user_key, day=day))


def summarize(document: dict[str, Any], summary: DatasetsSummary) -> DatasetsSummary:
    start_ns, end_ns = document["window"]["startNs"], document["window"]["endNs"]
    values: dict[str, list[float]] = defaultdict(list)
    stats = document.get("stats", {})
    summary.streams = len(document["pages"])
    summary.api_calls = int(stats.get("api_calls", 0))
    summary.bytes = int(stats.get("bytes", 0))
    summary.bad_points = len(document.get("badPoints", []))
    summary.dropped_outside_day = int(stats.get("outside_day", 0))
    summary.duplicates = int(stats.get("duplicates", 0))
    summary.supplied_fields = int(stats.get("supplied_fields", 0))
    for pages in document["pages"].values():
        summary.pages += len(pages)
        for page in pages:
            for point in page.get("point", []):
                summary.points += 1
                if not start_ns <= point["startTimeNanos"] <= end_ns:
                    summary.outside_day += 1
                first = (point.get("value") or [{}])[0]
                number = first.get("fpVal", first.get("intVal"))
                if isinstance(number, int | float):
                    values[str(point.get("dataTypeName"))].append(float(number))
    summary.values_by_type = dict(values)
    return summary


def _unauthorized(ports: Ports, user_key: str, day: str, exc: Exception) -> UserNotImportable:
    ports.users.set_state(
        user_key, UserState.UNAUTHORIZED, reason="invalid_grant: consent revoked or expired"
    )
    return UserNotImportable(
        user_key, day, f"Google refused the refresh token ({exc}); user marked unauthorized"
    )


def _fetch(
    ports: Ports, day: str, user_key: str, refresh_token: str
) -> tuple[DayFetch, list[dict[str, Any]]]:
    def store_rotated(new_token: str) -> None:
        ports.vault.put(user_key, new_token)

    client = GoogleFitClient(
        ports.settings, refresh_token, on_refresh_token=store_rotated, bad_points="collect"
    )
    try:
        sources = select_streams(
            client.list_data_sources(), ports.settings.stream_policy, ports.settings.data_types
        )
        return client.fetch_day(date.fromisoformat(day), sources), sources
    except fit_errors.ConsentRevoked:
        raise
    except fit_errors.GoogleFitError as exc:
        cls = TransientUserDayError if exc.retryable else UserDayError
        raise cls(user_key, day, f"{type(exc).__name__}: {exc}") from exc
    finally:
        client.close()
