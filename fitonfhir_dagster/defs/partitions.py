"""Partitions: one key per (UTC day, user). The user key is opaque (``u-...``), never PII."""

from __future__ import annotations

from datetime import date

import dagster as dg

USERS = "users"

user_partitions = dg.DynamicPartitionsDefinition(name=USERS)


def user_day_partitions(start_date: date) -> dg.MultiPartitionsDefinition:
    """``date x user`` from ``FITONFHIR_START_DATE``.

    ``end_offset=1``: today is a partition too, for the optional intraday refresh (a re-import is harmless).
    """
    days = dg.DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC", end_offset=1)
    return dg.MultiPartitionsDefinition({"date": days, "user": user_partitions})


def user_day_key(day: str, user_key: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"date": day, "user": user_key})


def split_user_day(key: str) -> tuple[str, str]:
    """(day, user key) of a ``date|user`` key, whatever form Dagster hands it over in."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims["date"], dims["user"]
    day, user = key.split("|", 1)
    return day, user
