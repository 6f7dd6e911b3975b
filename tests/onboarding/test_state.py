"""The OAuth state is signed, expires after 5 minutes and can be used once."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest

from onboarding_app.oauth_state import PendingAuthorization, StateError, StateStore, load_state_secret

PENDING = PendingAuthorization(
    external_system="urn:example:patients",
    external_id="p-1",
    redirect_url="https://app.example.org/done",
    caller_state="caller-state",
    code_verifier="v" * 64,
    anonymous=True,
)


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path / "state.sqlite3", b"k" * 32)


def test_an_issued_state_returns_the_caller_data_once(store):
    token, expires_at = store.issue(PENDING)
    assert expires_at - datetime.now(UTC) <= timedelta(minutes=5)
    assert store.consume(token) == PENDING
    with pytest.raises(StateError) as replay:
        store.consume(token)
    assert replay.value.reason == "used_state"


def test_the_token_holds_no_caller_data(store):
    token, _ = store.issue(PENDING)
    for value in ("p-1", "example", "caller-state", "v" * 16):
        assert value not in token


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t + "x",
        lambda t: ("B" if t[0] == "A" else "A") + t[1:],
        lambda t: t.split(".")[0],
        lambda t: "." + t.split(".")[1],
    ],
)
def test_a_forged_or_tampered_state_is_refused(store, mutate):
    token, _ = store.issue(PENDING)
    with pytest.raises(StateError) as refused:
        store.consume(mutate(token))
    assert refused.value.reason == "invalid_state"
    assert store.consume(token) == PENDING  # the genuine token was not consumed by the forgery


def test_a_state_signed_with_another_key_is_refused(tmp_path, store):
    other = StateStore(tmp_path / "other.sqlite3", b"o" * 32)
    token, _ = other.issue(PENDING)
    with pytest.raises(StateError) as refused:
        store.consume(token)
    assert refused.value.reason == "invalid_state"


def test_a_state_older_than_five_minutes_is_refused(store):
    token, _ = store.issue(PENDING, now=datetime.now(UTC) - timedelta(minutes=5, seconds=1))
    with pytest.raises(StateError) as refused:
        store.consume(token)
    assert refused.value.reason == "expired_state"
    assert "5 minute" in str(refused.value)


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_state_is_refused(store, token):
    with pytest.raises(StateError) as refused:
        store.consume(token)
    assert refused.value.reason == "missing_state"


def test_the_generated_signing_key_is_private_and_stable(tmp_path):
    first = load_state_secret("", tmp_path)
    path = tmp_path / "onboarding" / "state.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_state_secret("", tmp_path) == first
    assert len(first) >= 32
    assert load_state_secret("configured-secret-value", tmp_path) == b"configured-secret-value"


def test_a_short_signing_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="FITONFHIR_STATE_SECRET"):
        StateStore(tmp_path / "s.sqlite3", b"short")


def test_the_state_database_is_private(store):
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
