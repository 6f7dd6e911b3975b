"""Access tokens: one refresh on 401, invalid_grant = consent revoked, rotated refresh tokens stored first."""

from __future__ import annotations

from datetime import date

import pytest

from fitonfhir_dagster.googlefit.fit_client import day_window_ns
from fitonfhir_dagster.googlefit.fit_errors import (
    ConsentRevoked,
    FitUnauthorized,
    RefreshTokenStoreFailed,
    TokenRefreshFailed,
    TransientFitError,
)

START, END = day_window_ns(date(2025, 3, 3))
WEIGHT = "derived:com.google.weight:com.google.android.gms:merge_weight"


def test_the_first_request_refreshes_once_and_later_requests_reuse_the_token(make_client, onboard):
    client = make_client(onboard())
    client.list_data_sources()
    client.fetch_dataset_pages(WEIGHT, START, END)
    assert client.tokens.refreshes == 1 and client.tokens.token_requests == 1


def test_a_401_triggers_exactly_one_refresh_and_one_retry(sandbox, make_client, onboard, sleep):
    client = make_client(onboard())
    client.list_data_sources()
    sandbox.advance_clock(3600)  # the sandbox's access token expires; the client's clock does not know
    pages = client.fetch_dataset_pages(WEIGHT, START, END)
    assert pages is not None
    assert client.tokens.refreshes == 2
    assert client.stats.api_calls == 3  # list, 401, retried dataset request
    assert sleep.calls == []  # a 401 is not a backoff case


def test_a_401_after_the_refresh_is_not_retried_again(sandbox, make_client, onboard):
    refresh_token = onboard()
    client = make_client(refresh_token)
    client.tokens.access_token()
    sandbox.add_fault(path="/datasets/", status=401, count=5)
    with pytest.raises(
        FitUnauthorized, match=rf"stream {WEIGHT!r} page 0: Google answered 401 even after a token refresh"
    ):
        client.fetch_dataset_pages(WEIGHT, START, END)
    assert client.tokens.refreshes == 2
    assert client.stats.api_calls == 2


def test_invalid_grant_raises_consent_revoked_without_retrying(sandbox, make_client, onboard, sleep):
    refresh_token = onboard("revoked.user@example.com")
    sandbox.revoke_user(sandbox.sub_for_email("revoked.user@example.com"))
    client = make_client(refresh_token)
    with pytest.raises(ConsentRevoked) as err:
        client.list_data_sources()
    assert not err.value.retryable
    assert "invalid_grant" in str(err.value) and "consent again" in str(err.value)
    assert refresh_token not in str(err.value)
    assert client.tokens.token_requests == 1 and sleep.calls == []
    assert client.stats.api_calls == 0


def test_revocation_during_a_run_surfaces_as_consent_revoked(sandbox, make_client, onboard):
    client = make_client(onboard("mid.run@example.com"))
    client.list_data_sources()
    sandbox.revoke_user(sandbox.sub_for_email("mid.run@example.com"))  # access token dies too -> 401
    with pytest.raises(ConsentRevoked):
        client.fetch_dataset_pages(WEIGHT, START, END)


def test_invalid_grant_from_a_fault_is_not_retried_either(sandbox, make_client, onboard, sleep):
    client = make_client(onboard())
    sandbox.add_fault(path="^/token$", error="invalid_grant", count=1)
    with pytest.raises(ConsentRevoked, match="Token has been expired or revoked"):
        client.tokens.access_token()
    assert client.tokens.token_requests == 1 and sleep.calls == []


def test_token_endpoint_outages_are_retried_with_our_backoff(sandbox, make_client, onboard, sleep):
    client = make_client(onboard())
    sandbox.add_fault(path="^/token$", status=503, count=2)
    assert client.tokens.access_token()
    assert client.tokens.token_requests == 3 and len(sleep.calls) == 2


def test_a_429_from_the_token_endpoint_honours_retry_after(sandbox, make_client, onboard, sleep):
    client = make_client(onboard())
    sandbox.add_fault(path="^/token$", status=429, retry_after=5, count=1)
    assert client.tokens.access_token()
    assert len(sleep.calls) == 1 and sleep.calls[0] >= 5


def test_a_lasting_token_endpoint_outage_is_a_retryable_error(sandbox, make_client, onboard, sleep):
    refresh_token = onboard()
    client = make_client(refresh_token)
    sandbox.add_fault(path="^/token$", status=503, count=None)
    with pytest.raises(
        TransientFitError, match="could not refresh the access token: .*after 4 attempts: HTTP 503"
    ) as err:
        client.list_data_sources()
    assert err.value.retryable and refresh_token not in str(err.value)
    assert client.tokens.token_requests == 4 and client.stats.api_calls == 0


def test_a_wrong_client_secret_is_a_non_retried_configuration_error(
    sandbox, settings, make_client, onboard, sleep
):
    from dataclasses import replace

    client = make_client(onboard(), settings=replace(settings, google_client_secret="wrong"))
    with pytest.raises(TokenRefreshFailed, match="invalid_client") as err:
        client.list_data_sources()
    assert "wrong" not in str(err.value) and sleep.calls == []


def test_a_rotated_refresh_token_reaches_the_callback_before_the_access_token_is_used(
    sandbox, make_client, onboard
):
    old = onboard("rotating@example.com")
    sandbox.set_refresh_rotation(True)
    seen: list[tuple[str, int]] = []
    client = make_client(old, on_refresh_token=lambda new: seen.append((new, client.stats.api_calls)))

    sources = client.list_data_sources()

    assert sources
    ((new, api_calls_at_callback),) = seen
    assert new != old and api_calls_at_callback == 0  # stored before any Fit request
    assert sandbox.refresh(old).json()["error"] == "invalid_grant"  # Google dropped the old one
    assert sandbox.refresh(new).status_code == 200  # the stored one works


def test_when_storing_the_rotated_token_fails_the_access_token_is_never_used(sandbox, make_client, onboard):
    sandbox.set_refresh_rotation(True)

    def broken_vault(new: str) -> None:
        raise OSError("disk full")

    refresh_token = onboard("rotating.broken@example.com")
    client = make_client(refresh_token, on_refresh_token=broken_vault)
    with pytest.raises(RefreshTokenStoreFailed, match="OSError") as err:
        client.list_data_sources()
    assert client.stats.api_calls == 0
    assert refresh_token not in str(err.value)


def test_without_rotation_the_callback_is_not_called(make_client, onboard):
    seen: list[str] = []
    client = make_client(onboard(), on_refresh_token=seen.append)
    client.list_data_sources()
    assert seen == []


def test_an_empty_refresh_token_is_refused(make_client):
    with pytest.raises(ValueError, match="a refresh token is required"):
        make_client("")
