"""Issue 9 item 4: overlapping runs of one user. The second run waits for the first run's import lease, so
every Observation is written once (one version) and counted as created once; a killed run's lease expires."""

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.pipeline.erasure import erase_user_data
from fitonfhir_dagster.pipeline.leases import ImportLeases, LeaseLost, UserBusy
from fitonfhir_dagster.pipeline.runner import STEPS, iter_user_days
from fitonfhir_dagster.pipeline.step_errors import UserNotImportable
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import running_sandbox

TODAY = datetime.now(UTC).date()
DAYS = [(TODAY - timedelta(days=n)).isoformat() for n in (4, 3)]  # two complete, settled days
TEMPLATES = generate_templates(sample_data_sources(), style="standard")
WAITING = "is being imported by run"


@pytest.fixture
def sandbox(tmp_path):
    with running_sandbox(tmp_path / "sandbox", rotate_refresh_tokens=True) as sandbox:
        yield sandbox


def _stores(home, sandbox, **env):
    """A run's own view of the shared home: its own users-table connection, as a second process has."""
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(home),
            "FITONFHIR_SANDBOX_URL": sandbox.url,
            "FITONFHIR_MAX_REQUESTS_PER_MINUTE": "0",
            **env,
        }
    )
    return StepStores(
        settings,
        SqliteUsersTable(home / "users.sqlite3"),
        LocalTokenVault(home / "vault"),
        LocalArchive(home / "archive"),
    )


def _onboard(stores, sandbox, email):
    tokens = sandbox.onboard(email)
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(email), google_issuer=sandbox.url, patient_id=f"p-{email[:6]}"
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    return user


def _import(stores, sandbox, keys, owner):
    return list(
        iter_user_days(
            stores, keys, STEPS, fhir=FhirClient(sandbox.fhir_url), templates=TEMPLATES, owner=owner
        )
    )


def _created(outcomes):
    return sum(o.summaries["fhir_observations"].created for o in outcomes if o.ok)


def _observations(sandbox):
    return FhirClient(sandbox.fhir_url).search("Observation", {"_count": "1000"})


def test_two_overlapping_runs_of_one_user_write_each_observation_once_and_count_it_once(
    tmp_path, sandbox, caplog
):
    home = tmp_path / "home"
    # TTL 1 s while the window fetch takes several: only the heartbeat keeps the first run's lease
    env = {"FITONFHIR_USER_LEASE_TTL_SECONDS": "1", "FITONFHIR_USER_LEASE_WAIT_SECONDS": "120"}
    user = _onboard(_stores(home, sandbox), sandbox, "overlap@example.com")
    keys = [(day, user.key) for day in DAYS]
    # A slow Google and a slow FHIR server: the runs really overlap. Without the lease, both runs' batch
    # reads of a day are answered before either run's transaction, so both PUT the new Observations.
    sandbox.add_fault(path="/datasets/", delay=0.4, count=None)
    sandbox.add_fault(path=r"/fhir/?$", method="POST", delay=0.3, count=None)
    start = threading.Barrier(2)
    results: dict[str, list] = {}
    spans: dict[str, tuple[float, float]] = {}

    def run(owner: str) -> None:
        stores = _stores(home, sandbox, **env)
        start.wait()
        began = time.monotonic()
        results[owner] = _import(stores, sandbox, keys, owner)
        spans[owner] = (began, time.monotonic())

    caplog.set_level(logging.INFO, logger="fitonfhir_dagster.pipeline.leases")
    threads = [threading.Thread(target=run, args=(owner,)) for owner in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    sandbox.clear_faults()

    assert set(results) == {"run-a", "run-b"}
    for outcomes in results.values():
        assert [str(o.error) for o in outcomes if not o.ok] == []
        assert sorted(o.day for o in outcomes) == DAYS
    (a0, a1), (b0, b1) = spans["run-a"], spans["run-b"]
    assert a0 < b1 and b0 < a1  # the two runs were under way at the same time
    waits = [r.getMessage() for r in caplog.records if WAITING in r.getMessage()]
    assert len(waits) == 1 and user.key in waits[0]  # one of them found the other holding the user
    first, second = re.search(r"by run (\S+); run (\S+) waits", waits[0]).groups()  # type: ignore[union-attr]
    assert {first, second} == {"run-a", "run-b"}

    observations = _observations(sandbox)
    assert observations
    assert sorted({o["meta"]["versionId"] for o in observations}) == ["1"]  # written once: one version each
    assert _created(results[first]) + _created(results[second]) == len(observations)  # counted once
    # the second run saw what the first wrote: same fingerprints, no FHIR write, nothing created
    later = [o.summaries["fhir_observations"] for o in results[second]]
    assert all(s.skipped and s.created == s.updated == 0 for s in later)
    assert sum(s.unchanged for s in later) == len(observations)
    assert SqliteUsersTable(home / "users.sqlite3").import_holder(user.key) is None  # both released


def test_a_killed_runs_lease_expires_and_the_next_run_takes_it_over(tmp_path, sandbox, caplog):
    home = tmp_path / "home"
    stores = _stores(home, sandbox, FITONFHIR_USER_LEASE_WAIT_SECONDS="30")
    user = _onboard(stores, sandbox, "killed@example.com")
    assert stores.users.claim_import(user.key, "run-killed", 1.5)  # its run died: never renewed or released
    caplog.set_level(logging.INFO, logger="fitonfhir_dagster.pipeline.leases")

    began = time.monotonic()
    outcomes = _import(stores, sandbox, [(DAYS[0], user.key)], "run-next")

    assert [str(o.error) for o in outcomes if not o.ok] == []
    assert _created(outcomes) == len(_observations(sandbox)) > 0
    assert time.monotonic() - began >= 1.0  # it waited for the expiry, not longer than the wait
    assert any("by run run-killed;" in r.getMessage() for r in caplog.records)
    assert stores.users.import_holder(user.key) is None


def test_a_user_held_by_a_live_run_fails_retryably_naming_that_run_and_the_other_users_are_imported(
    tmp_path, sandbox
):
    home = tmp_path / "home"
    stores = _stores(home, sandbox, FITONFHIR_USER_LEASE_WAIT_SECONDS="1")
    busy, free = (_onboard(stores, sandbox, f"{name}@example.com") for name in ("busy", "free"))
    assert stores.users.claim_import(busy.key, "run-elsewhere", 120)
    keys = [(day, u.key) for u in (busy, free) for day in DAYS]

    outcomes = {(o.day, o.user_key): o for o in _import(stores, sandbox, keys, "run-here")}

    assert len(outcomes) == len(keys)
    for day in DAYS:
        failed = outcomes[(day, busy.key)]
        assert isinstance(failed.error, UserBusy) and failed.error.retryable
        assert f"{day}|{busy.key}: user {busy.key} is being imported by run run-elsewhere" in str(
            failed.error
        )
        assert (
            outcomes[(day, free.key)].ok and outcomes[(day, free.key)].summaries["fhir_observations"].created
        )
    assert stores.users.import_holder(busy.key) == "run-elsewhere"  # never released by another owner
    assert stores.users.import_holder(free.key) is None


def test_waiting_for_a_lease_ends_as_soon_as_the_run_is_stopped(tmp_path):
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    assert users.claim_import("u-waiting001", "run-holder", 120)
    leases = ImportLeases(users, "run-waiter", ttl_seconds=60, wait_seconds=60, poll_seconds=0.2)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()

    began = time.monotonic()
    assert leases.acquire("u-waiting001", stop) == "run-holder"
    assert time.monotonic() - began < 5


class _FlakyLeases(SqliteUsersTable):
    """The real SQLite users table, with the lease calls of one user made to fail: ``broken`` raises
    on every claim, ``stolen`` loses its lease after the claim and one renewal (another run took it over)."""

    def __init__(self, path, broken: str = "", stolen: str = "", broken_after_claim: str = "") -> None:
        super().__init__(path)
        self.broken, self.stolen, self.claims = broken, stolen, 0
        self.broken_after_claim, self.claimed = broken_after_claim, False

    def claim_import(self, user_key, owner, ttl_seconds):
        if user_key == self.broken:
            raise OSError("users table unreachable")
        if user_key == self.broken_after_claim:
            if self.claimed:  # the claim worked; every renewal after it fails
                raise OSError("users table went away")
            self.claimed = True
        if user_key == self.stolen:
            self.claims += 1
            if self.claims > 2:
                return False
        return super().claim_import(user_key, owner, ttl_seconds)

    def import_holder(self, user_key):
        return "run-thief" if user_key == self.stolen else super().import_holder(user_key)


def _stores_with(home, sandbox, users):
    stores = _stores(home, sandbox)
    return StepStores(stores.settings, users, stores.vault, stores.archive)


def test_a_users_table_failing_the_lease_fails_that_user_retryably_and_the_others_are_imported(
    tmp_path, sandbox
):
    home = tmp_path / "home"
    stores = _stores(home, sandbox)
    broken, fine = (_onboard(stores, sandbox, f"{name}@example.com") for name in ("broken", "fine"))
    flaky = _stores_with(home, sandbox, _FlakyLeases(home / "users.sqlite3", broken=broken.key))
    keys = [(day, u.key) for u in (broken, fine) for day in DAYS]

    outcomes = {(o.day, o.user_key): o for o in _import(flaky, sandbox, keys, "run-here")}

    assert len(outcomes) == len(keys)
    for day in DAYS:
        failed = outcomes[(day, broken.key)]
        assert failed.error is not None and failed.error.retryable
        assert "import lease: OSError: users table unreachable" in str(failed.error)
        assert outcomes[(day, fine.key)].ok


def test_a_run_whose_lease_was_taken_over_leaves_the_remaining_days_to_the_other_run(tmp_path, sandbox):
    home = tmp_path / "home"
    stores = _stores(home, sandbox)
    user = _onboard(stores, sandbox, "stolen@example.com")
    flaky = _stores_with(home, sandbox, _FlakyLeases(home / "users.sqlite3", stolen=user.key))
    keys = [(day, user.key) for day in DAYS]

    outcomes = _import(flaky, sandbox, keys, "run-here")

    assert len(outcomes) == len(DAYS)
    done, lost = [o for o in outcomes if o.ok], [o for o in outcomes if not o.ok]
    # each day renews before it is written: one renewal held, then the other days found the lease taken
    assert len(done) == 1 and len(lost) == len(DAYS) - 1
    assert isinstance(lost[0].error, LeaseLost) and lost[0].error.retryable
    assert "run run-thief took it over" in str(lost[0].error)


def test_a_users_table_failing_the_renewals_does_not_stop_the_user_and_each_day_is_written(
    tmp_path, sandbox, caplog
):
    home = tmp_path / "home"
    stores = _stores(home, sandbox)
    user = _onboard(stores, sandbox, "renewal@example.com")
    flaky = _stores_with(home, sandbox, _FlakyLeases(home / "users.sqlite3", broken_after_claim=user.key))
    keys = [(day, user.key) for day in DAYS]

    with caplog.at_level(logging.WARNING, logger="fitonfhir_dagster.pipeline.leases"):
        outcomes = _import(flaky, sandbox, keys, "run-here")

    # the lease stays ours until its TTL while the table is away (the heartbeat keeps trying)
    assert sorted(o.day for o in outcomes) == DAYS and all(o.ok for o in outcomes)
    assert _created(outcomes) == len(_observations(sandbox)) > 0
    renewals = [r for r in caplog.records if "could not renew the import lease" in r.getMessage()]
    assert len(renewals) >= len(DAYS)  # one before each day's write, each logged


def test_an_import_that_waited_for_an_erasure_finds_the_user_erased_and_writes_nothing(
    tmp_path, sandbox, caplog
):
    home = tmp_path / "home"
    stores = _stores(home, sandbox, FITONFHIR_USER_LEASE_WAIT_SECONDS="120")
    user = _onboard(stores, sandbox, "erased@example.com")
    assert _created(_import(stores, sandbox, [(DAYS[0], user.key)], "run-first")) > 0
    # slow deletions: the erasure holds the user's lease for a while
    sandbox.add_fault(path=r"/fhir/?$", method="POST", delay=1.0, count=None)
    erased: list = []
    erasure = threading.Thread(
        target=lambda: erased.append(
            erase_user_data(_stores(home, sandbox), FhirClient(sandbox.fhir_url), user.key)
        )
    )
    erasure.start()
    deadline = time.monotonic() + 60
    while not (stores.users.import_holder(user.key) or "").startswith("erasure-"):
        assert time.monotonic() < deadline, "the erasure never took the user's import lease"
        time.sleep(0.02)
    caplog.set_level(logging.INFO, logger="fitonfhir_dagster.pipeline.leases")

    outcomes = _import(stores, sandbox, [(day, user.key) for day in DAYS], "run-after")

    erasure.join(timeout=120)
    sandbox.clear_faults()
    assert erased and erased[0].observations > 0
    assert any(f"{WAITING} erasure-" in r.getMessage() for r in caplog.records)  # it waited for the erasure
    assert sorted(o.day for o in outcomes) == DAYS
    for outcome in outcomes:
        assert isinstance(outcome.error, UserNotImportable) and "user is erased" in str(outcome.error)
    assert _observations(sandbox) == []
    assert [n for n in stores.archive.list() if f"user={user.key}" in n] == []
    assert stores.users.import_holder(user.key) is None
