"""Our Google Health client against the sandbox's v4 emulation: identity, filters, paging, views, errors."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fitonfhir_dagster.googlefit.fit_errors import ConsentRevoked
from fitonfhir_dagster.googlehealth.health_catalog import DEFAULT_TYPE_NAMES, TYPES, scopes_for
from fitonfhir_dagster.googlehealth.health_errors import (
    AccountNotLinked,
    HealthPermissionDenied,
    HealthRequestError,
    TransientHealthError,
)
from fitonfhir_dagster.googlehealth.health_wire import start_day, time_filter

DAY = date(2025, 3, 2)
NEXT = DAY + timedelta(days=1)
HR, STEPS, DAILY_O2 = TYPES["heart-rate"], TYPES["steps"], TYPES["daily-oxygen-saturation"]


@pytest.fixture
def client(make_client, onboard):
    c = make_client(onboard())
    c.tokens.access_token()  # token endpoint out of the way: faults below target the Health API
    return c


def test_each_time_kind_filters_on_its_own_field():
    assert time_filter(STEPS, DAY, NEXT) == (
        'steps.interval.start_time >= "2025-03-02T00:00:00Z" AND steps.interval.start_time < "2025-03-03T00:00:00Z"'
    )
    assert time_filter(HR, DAY, NEXT).startswith(
        'heart_rate.sample_time.physical_time >= "2025-03-02T00:00:00Z"'
    )
    assert time_filter(DAILY_O2, DAY, NEXT) == (
        'daily_oxygen_saturation.date >= "2025-03-02" AND daily_oxygen_saturation.date < "2025-03-03"'
    )


def test_identity_gives_a_stable_health_user_id(client, make_client, onboard):
    first = client.identity()
    again = make_client(onboard()).identity()
    assert first["healthUserId"] == again["healthUserId"] and first["name"] == "users/me/identity"


def test_small_pages_walk_every_point_once_newest_first_with_int64_as_ints(client):
    whole = client.data_point_pages(HR, DAY, NEXT)
    paged = client.data_point_pages(HR, DAY, NEXT, page_size=7)

    points = [p for page in whole for p in page.points]
    assert len(whole) == 1 and len(paged) == -(-len(points) // 7) > 3
    assert [p for page in paged for p in page.points] == points
    times = [p["heartRate"]["sampleTime"]["physicalTime"] for p in points]
    assert times == sorted(times, reverse=True)
    assert all(isinstance(p["heartRate"]["beatsPerMinute"], int) for p in points)
    assert {start_day(HR, p) for p in points} == {DAY}


def test_the_list_view_names_each_source_and_reconcile_gives_one_stream(client):
    listed = [p for page in client.data_point_pages(STEPS, DAY, NEXT, view="list") for p in page.points]
    reconciled = [
        p for page in client.data_point_pages(STEPS, DAY, NEXT, view="reconcile") for p in page.points
    ]

    assert listed and all("dataSource" in p for p in listed)
    assert reconciled and not any("dataSource" in p for p in reconciled)
    assert {p["dataSource"]["platform"] for p in listed} <= {"FITBIT", "HEALTH_CONNECT", "GOOGLE_WEB_API"}


def test_a_window_is_fetched_once_per_type_and_split_by_the_day_each_point_starts(client):
    window = client.fetch_window(DAY, DAY + timedelta(days=2))

    assert set(window.days) == {DAY, NEXT, DAY + timedelta(days=2)}
    assert window.stats.api_calls == 1 + len(DEFAULT_TYPE_NAMES)  # identity + one page per type
    for day, types in window.days.items():
        assert set(types) == set(DEFAULT_TYPE_NAMES)
        for name, pages in types.items():
            assert all(start_day(TYPES[name], p) == day for page in pages for p in page.points)
    assert window.days[DAY]["heart-rate"] and window.days[NEXT]["steps"]


def test_daily_types_are_read_by_date(client):
    pages = client.data_point_pages(DAILY_O2, DAY, DAY + timedelta(days=3))
    dates = [p["dailyOxygenSaturation"]["date"] for page in pages for p in page.points]
    assert dates == [{"year": 2025, "month": 3, "day": d} for d in (4, 3, 2)]


def test_429_resource_exhausted_is_retried_after_retry_after(sandbox, client, sleep):
    expected = client.data_point_pages(HR, DAY, NEXT)
    sandbox.add_fault(path="/v4/users/me/dataTypes/heart-rate/dataPoints", status=429, retry_after=7, count=2)

    again = client.data_point_pages(HR, DAY, NEXT)

    assert [p.points for p in again] == [p.points for p in expected]
    assert len(sleep.calls) == 2 and all(s >= 7 for s in sleep.calls)


def test_5xx_that_never_ends_is_a_transient_error_naming_type_and_page(sandbox, client):
    sandbox.add_fault(path=r"dataPoints:reconcile$", status=503, count=None)
    with pytest.raises(
        TransientHealthError, match=r"steps reconcile page 0: .*4 attempts.*HTTP 503 UNAVAILABLE"
    ):
        client.data_point_pages(STEPS, DAY, NEXT, view="reconcile")


def test_a_truncated_body_is_fetched_again(sandbox, client):
    expected = client.data_point_pages(HR, DAY, NEXT)
    sandbox.add_fault(path="/dataTypes/heart-rate/", malformed="not_json", count=1)
    assert [p.points for p in client.data_point_pages(HR, DAY, NEXT)] == [p.points for p in expected]


def test_a_bad_point_is_set_aside_with_its_reason_and_the_rest_kept(sandbox, client):
    expected = sum(len(p.points) for p in client.data_point_pages(HR, DAY, NEXT))
    sandbox.add_fault(path="/dataTypes/heart-rate/", malformed="wrong_value_type", count=1)

    pages = client.data_point_pages(HR, DAY, NEXT)

    assert sum(len(p.points) for p in pages) == expected - 1
    [bad] = [b for p in pages for b in p.bad_points]
    assert bad.reason == "heart-rate page 0 point 0 heartRate.beatsPerMinute: not an int64: 'abc'"


def test_an_account_without_google_health_needs_the_user_and_is_not_retried(make_client, onboard, sleep):
    client = make_client(onboard("no.health+nohealth@example.com"))
    with pytest.raises(AccountNotLinked, match="ACCOUNT_NOT_LINKED.*set up Google Health") as caught:
        client.fetch_window(DAY, DAY)
    assert caught.value.status == 400 and not caught.value.retryable and sleep.calls == []


def test_a_type_whose_scope_was_not_granted_is_denied(make_client, onboard):
    activity_only = scopes_for(["steps"])
    client = make_client(onboard("steps.only@example.com", activity_only))
    assert client.data_point_pages(STEPS, DAY, NEXT)
    with pytest.raises(HealthPermissionDenied, match="403.*ACCESS_TOKEN_SCOPE_INSUFFICIENT"):
        client.data_point_pages(HR, DAY, NEXT)


def test_a_filter_the_api_does_not_support_is_refused_with_googles_reason(client):
    with pytest.raises(HealthRequestError, match="INVALID_DATA_POINT_FILTER_FIELD") as caught:
        client._get(
            "users/me/dataTypes/steps/dataPoints",
            {"filter": 'heart_rate.sample_time.physical_time >= "2025-03-02T00:00:00Z"'},
            "bad filter",
        )
    assert caught.value.reason == "INVALID_DATA_POINT_FILTER_FIELD"


def test_a_revoked_grant_is_consent_revoked_as_for_fit(sandbox, make_client, onboard):
    client = make_client(onboard("revoked.health@example.com"))
    sandbox.revoke_user(sandbox.sub_for_email("revoked.health@example.com"))
    with pytest.raises(ConsentRevoked):
        client.identity()
