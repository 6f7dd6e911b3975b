"""Overlap rule: Google returns every point overlapping the day; each point belongs to the day it starts in."""

from __future__ import annotations

from datetime import date

from fitonfhir_dagster.googlefit.fit_client import DatasetPage, FetchStats, assign_to_day, day_window_ns

STREAM = "derived:com.google.step_count.delta:com.google.android.gms:merge_step_deltas"
DAY = date(2025, 3, 1)
START, END = day_window_ns(DAY)
MINUTE = 60 * 10**9


def point(start: int, end: int, steps: int = 10) -> dict:
    return {"startTimeNanos": start, "endTimeNanos": end, "value": [{"intVal": steps, "mapVal": []}]}


def page(index: int, *points: dict) -> DatasetPage:
    return DatasetPage(STREAM, index, {"dataSourceId": STREAM, "point": list(points)})


def test_a_point_crossing_midnight_belongs_to_the_day_it_started():
    from_yesterday = point(START - 5 * MINUTE, START + 5 * MINUTE)
    into_tomorrow = point(END - 5 * MINUTE, END + 5 * MINUTE)
    inside = point(START + MINUTE, START + 2 * MINUTE)
    stats = FetchStats()

    kept = assign_to_day([page(0, from_yesterday, inside, into_tomorrow)], START, END, stats)

    assert kept[0].points == [inside, into_tomorrow]
    assert stats.outside_day == 1 and stats.points == 2
    # the next day's window sees the same crossing point and drops it: imported exactly once
    next_start, next_end = day_window_ns(date(2025, 3, 2))
    crossing_again = point(END - 5 * MINUTE, END + 5 * MINUTE)
    assert assign_to_day([page(0, crossing_again)], next_start, next_end) == []


def test_the_window_edges_are_inclusive_and_exact_to_the_nanosecond():
    first, last = point(START, START), point(END, END)
    before, after = point(START - 1, START - 1), point(END + 1, END + 1)
    (kept,) = assign_to_day([page(0, before, first, last, after)], START, END)
    assert kept.points == [first, last]


def test_identical_points_on_several_pages_are_kept_once():
    a = point(START + MINUTE, START + 2 * MINUTE, steps=5)
    same_as_a = point(START + MINUTE, START + 2 * MINUTE, steps=5) | {"modifiedTimeMillis": 1}
    other_value = point(START + MINUTE, START + 2 * MINUTE, steps=6)
    stats = FetchStats()
    kept = assign_to_day([page(0, a, other_value), page(1, same_as_a)], START, END, stats)
    assert [p.points for p in kept] == [[a, other_value]]  # page 1 became empty and is dropped
    assert stats.duplicates == 1 and stats.points == 2


def test_a_page_with_only_bad_points_is_kept_for_its_dead_letters():
    bad_only = page(0)
    bad_only.bad_points.append(({"startTimeNanos": "x"}, "reason"))
    assert assign_to_day([bad_only], START, END) == [bad_only]
