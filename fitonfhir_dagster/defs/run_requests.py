"""Run requests of the automation: which (day, user) rectangles a sensor or schedule asks for."""

from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import dagster as dg

from ..stores.users import User

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
USER_TAG = "fitonfhir/user"  # single-user runs: filter runs by user; the per-user run limit keys on it
DAYS_TAG = "fitonfhir/days"  # "first..last" UTC days of the run


def range_run_request(
    first_day: date, last_day: date, first_user: str, last_user: str, run_key: str
) -> dg.RunRequest:
    """One run covering a rectangle of ``date x user`` keys (a contiguous user range in partition order)."""
    tags = {
        RANGE_START: f"{first_day.isoformat()}|{first_user}",
        RANGE_END: f"{last_day.isoformat()}|{last_user}",
        DAYS_TAG: f"{first_day.isoformat()}..{last_day.isoformat()}",
    }
    if first_user == last_user:
        tags[USER_TAG] = first_user
    return dg.RunRequest(run_key=run_key, tags=tags)


def initial_history(today: date, initial_days: int, start: date) -> tuple[date, date] | None:
    """The first import window of a new user: the ``initial_days`` complete days before today."""
    last = today - timedelta(days=1)
    first = max(start, today - timedelta(days=initial_days))
    return (first, last) if first <= last else None


def batches_of_active(
    ordered_keys: Sequence[str], active: set[str], batch_size: int
) -> list[tuple[str, str]]:
    """Contiguous runs of active users, in partition order, at most ``batch_size`` users each.

    A range run covers every key between its ends, so an inactive user splits a batch rather than
    being imported by accident.
    """
    batches: list[tuple[str, str]] = []
    current: list[str] = []
    for key in ordered_keys:
        if key in active:
            current.append(key)
            if len(current) == batch_size:
                batches.append((current[0], current[-1]))
                current = []
        elif current:
            batches.append((current[0], current[-1]))
            current = []
    if current:
        batches.append((current[0], current[-1]))
    return batches


def user_history_requests(
    known: Iterable[str],
    active: Iterable[User],
    since: str | None,
    today: date,
    initial_days: int,
    start: date,
) -> tuple[list[str], list[dg.RunRequest]]:
    """New partitions and history runs: for new users, and for known users re-activated after ``since``

    (a user back from unauthorized/revoked gets the days missed meanwhile, up to ``initial_days``).
    """
    known_set = set(known)
    new = [u.key for u in active if u.key not in known_set]
    window = initial_history(today, initial_days, start)
    if not window:
        return new, []
    requests = [range_run_request(window[0], window[1], key, key, run_key=f"initial-{key}") for key in new]
    if since is not None:
        for user in active:
            if user.key in known_set and user.state_changed_at >= since:
                run_key = f"reactivated-{user.key}-{user.state_changed_at}"
                requests.append(range_run_request(window[0], window[1], user.key, user.key, run_key=run_key))
    return new, requests
