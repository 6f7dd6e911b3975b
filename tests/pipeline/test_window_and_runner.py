"""Work per run: one window fetch per user, users side by side, re-runs that cost FHIR nothing."""

import logging
import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.googlefit.fit_client import DatasetPage, GoogleFitClient
from fitonfhir_dagster.googlefit.wire import reading_identity
from fitonfhir_dagster.pipeline.datasets import fetch_user_day, fetch_user_window, load_datasets
from fitonfhir_dagster.pipeline.runner import STEPS, iter_user_days
from fitonfhir_dagster.pipeline.step_errors import UserNotImportable
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable, UserState
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import running_sandbox


def run_all(*args, **kwargs):
    """Every outcome of a run, in completion order."""
    return list(iter_user_days(*args, **kwargs))


TODAY = datetime.now(UTC).date()
DAYS = [(TODAY - timedelta(days=n)).isoformat() for n in range(6, 1, -1)]  # five complete, settled days
NS_PER_HOUR = 3_600_000_000_000


class SandboxRequests(logging.Handler):
    """Counts the sandbox's access log: (method, path) of every request it answered."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        method, path = str(record.args[0]), str(record.args[1])  # type: ignore[index]
        with self._guard:
            self.seen.append((method, path))

    def take(self) -> list[tuple[str, str]]:
        with self._guard:
            seen, self.seen = self.seen, []
        return seen


@pytest.fixture
def requests_seen():
    logger = logging.getLogger("fitonfhir.sandbox")
    handler, level = SandboxRequests(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def sandbox(tmp_path):
    with running_sandbox(tmp_path / "sandbox", rotate_refresh_tokens=True) as sandbox:
        yield sandbox


def _ports(home, sandbox, **env):
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


@pytest.fixture
def stores(tmp_path, sandbox):
    return _ports(tmp_path / "home", sandbox)


def _onboard(stores, sandbox, email):
    tokens = sandbox.onboard(email)
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(email), google_issuer=sandbox.url, patient_id=f"p-{abs(hash(email))}"
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    return user


def _points_by_stream(document):
    return {
        stream: sorted(reading_identity(p) for page in pages for p in page["point"])
        for stream, pages in document["pages"].items()
    }


def test_one_token_refresh_and_one_source_list_per_user_window(stores, sandbox, requests_seen):
    user = _onboard(stores, sandbox, "window@example.com")
    requests_seen.take()
    summaries = fetch_user_window(stores, user.key, DAYS)
    seen = requests_seen.take()
    assert sorted(summaries) == DAYS and all(s.points > 0 for s in summaries.values())
    assert [p for _, p in seen].count("/token") == 1
    assert [p for _, p in seen].count("/fitness/v1/users/me/dataSources") == 1
    dataset_paths = Counter(p for _, p in seen if "/datasets/" in p)
    streams = summaries[DAYS[0]].streams
    assert len(dataset_paths) == streams  # one dataset range per stream: the whole window
    window = dataset_paths.most_common(1)[0][0].rsplit("/", 1)[1]
    start_ns, end_ns = map(int, window.split("-"))
    first = datetime.fromisoformat(DAYS[0]).replace(tzinfo=UTC)
    assert start_ns == int(first.timestamp()) * 10**9
    assert end_ns == int((first + timedelta(days=len(DAYS))).timestamp()) * 10**9 - 1
    # the dataset calls of the window are shared out over its days: they add up to what was sent
    assert sum(s.api_calls for s in summaries.values()) == sum(dataset_paths.values())


def test_window_fetch_archives_the_same_points_per_day_as_day_by_day_fetches(tmp_path, sandbox):
    by_day = _ports(tmp_path / "by-day", sandbox)
    windowed = _ports(tmp_path / "window", sandbox)
    email = "compare@example.com"
    user = _onboard(by_day, sandbox, email)
    windowed.users.upsert_onboarded(
        google_sub=user.google_sub, google_issuer=sandbox.url, patient_id=user.patient_id, key=user.key
    )
    windowed.vault.put(user.key, sandbox.onboard(email)["refresh_token"])

    single = {day: fetch_user_day(by_day, day, user.key) for day in DAYS}
    window = fetch_user_window(windowed, user.key, DAYS)

    for day in DAYS:
        a, b = load_datasets(by_day, day, user.key), load_datasets(windowed, day, user.key)
        assert _points_by_stream(a) == _points_by_stream(b), day
        assert a["window"] == b["window"] and a["sources"] == b["sources"]
        assert (single[day].points, single[day].streams, single[day].bad_points) == (
            window[day].points,
            window[day].streams,
            window[day].bad_points,
        )
        assert window[day].outside_day == 0
        ranges, window_ranges = _value_ranges(single[day]), _value_ranges(window[day])
        assert sorted(ranges) == sorted(window_ranges)
        for data_type, (count, low, high, mean) in ranges.items():
            assert window_ranges[data_type] == (count, low, high, pytest.approx(mean)), data_type
        for pages in b["pages"].values():  # each day's pages carry the day's range, not the window's
            assert all((p["minStartTimeNs"], p["maxEndTimeNs"]) == tuple(b["window"].values()) for p in pages)


def _value_ranges(summary):
    return {t: (s.count, s.low, s.high, s.mean) for t, s in summary.value_stats.items()}


def _point(start_ns, end_ns, bpm):
    return {
        "startTimeNanos": start_ns,
        "endTimeNanos": end_ns,
        "dataTypeName": "com.google.heart_rate.bpm",
        "value": [{"fpVal": bpm, "mapVal": []}],
    }


def test_a_point_crossing_midnight_is_archived_once_by_the_day_it_starts_in(tmp_path):
    first, last = date(2026, 11, 20), date(2026, 11, 21)
    midnight = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp()) * 10**9
    window_start = midnight - 24 * NS_PER_HOUR
    crossing = _point(midnight - NS_PER_HOUR, midnight + NS_PER_HOUR, 70.0)  # 23:00 -> 01:00
    second_day = _point(midnight + 2 * NS_PER_HOUR, midnight + 2 * NS_PER_HOUR, 71.0)
    before = _point(window_start - NS_PER_HOUR, window_start + NS_PER_HOUR, 60.0)  # starts the day before
    first_day = _point(window_start + NS_PER_HOUR, window_start + NS_PER_HOUR, 65.0)
    stream = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
    # newest page first, the crossing point on both pages (Google's overlap), limit from the end
    pages = [
        {"point": [crossing, second_day], "nextPageToken": "older"},
        {"point": [before, first_day, crossing]},
    ]
    client = GoogleFitClient(Settings.from_env({"FITONFHIR_HOME": str(tmp_path)}), "unused")
    asked = []

    def fake_pages(stream_id, start_ns, end_ns, limit=None, **kwargs):
        asked.append((stream_id, start_ns, end_ns))
        for index, dataset in enumerate(pages):
            yield DatasetPage(stream_id, index, orjson.loads(orjson.dumps(dataset)), [], 100)

    client.iter_dataset_pages = fake_pages  # type: ignore[method-assign]
    fetched = {f.day: f for f in client.fetch_window(first, last, [stream])}

    assert asked == [(stream, window_start, midnight + 24 * NS_PER_HOUR - 1)]  # one read for both days
    day1 = [p for page in fetched[first].streams[stream] for p in page.points]
    day2 = [p for page in fetched[last].streams[stream] for p in page.points]
    assert sorted(p["value"][0]["fpVal"] for p in day1) == [65.0, 70.0]  # the crossing point, once
    assert [p["value"][0]["fpVal"] for p in day2] == [71.0]
    assert fetched[first].stats.outside_day == 1  # started before the window: dropped, as today
    assert fetched[first].stats.duplicates == 1  # the crossing point's second copy
    assert fetched[last].stats.outside_day == 0


def test_a_run_of_several_users_with_one_failing_user_completes_the_others(stores, sandbox):
    users = [_onboard(stores, sandbox, f"side-{i}@example.com") for i in range(3)]
    sandbox.revoke_user(users[1].google_sub)
    keys = [(day, u.key) for u in users for day in DAYS[:2]]
    outcomes = run_all(stores, keys, ("fit_datasets", "device_messages"), workers=3)
    assert len(outcomes) == len(keys)
    by_key = {(o.day, o.user_key): o for o in outcomes}
    for day in DAYS[:2]:
        failed = by_key[(day, users[1].key)]
        assert isinstance(failed.error, UserNotImportable) and f"{day}|{users[1].key}" in str(failed.error)
        for user in (users[0], users[2]):
            done = by_key[(day, user.key)]
            assert (
                done.ok and done.summaries["device_messages"].points == done.summaries["fit_datasets"].points
            )
    assert stores.users.get(users[1].key).state is UserState.UNAUTHORIZED
    assert stores.users.get(users[0].key).state is UserState.ACTIVE


def test_rotated_refresh_tokens_are_never_lost_under_concurrency(stores, sandbox):
    """The sandbox revokes a refresh token as soon as it rotates it: a lost rotation is a lost user."""
    users = [_onboard(stores, sandbox, f"rotate-{i}@example.com") for i in range(4)]
    keys = [(day, u.key) for u in users for day in DAYS[:2]]
    results: list[list] = []

    def run() -> None:
        results.append(run_all(stores, keys, ("fit_datasets",), workers=4, owner="one-owner"))

    # two runs over the same users at once: every user's token is refreshed (and rotated) by both (one
    # import-lease owner for both, or the second would wait for the first instead of racing it)
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2
    for outcomes in results:
        assert [str(o.error) for o in outcomes if not o.ok] == []
    again = run_all(stores, keys, ("fit_datasets",), workers=4)  # the stored tokens still work
    assert all(o.ok for o in again)
    for user in users:
        assert stores.users.get(user.key).state is UserState.ACTIVE
        assert sandbox.refresh(stores.vault.get(user.key)).status_code == 200


def test_a_rerun_that_changed_nothing_sends_no_fhir_request(stores, sandbox, requests_seen, monkeypatch):
    users = [_onboard(stores, sandbox, f"rerun-{i}@example.com") for i in range(2)]
    templates = generate_templates(sample_data_sources(), style="standard")
    keys = [(day, u.key) for u in users for day in DAYS[:3]]

    def run(**env):
        run_ports = _ports(stores.settings.home, sandbox, **env)
        fhir = FhirClient(sandbox.fhir_url)
        requests_seen.take()
        outcomes = run_all(run_ports, keys, STEPS, fhir=fhir, templates=templates, workers=2)
        assert [str(o.error) for o in outcomes if not o.ok] == []
        fhir_requests = [r for r in requests_seen.take() if r[1].startswith("/fhir")]
        return {(o.day, o.user_key): o.summaries["fhir_observations"] for o in outcomes}, fhir_requests

    first, sent = run()
    assert sum(s.created for s in first.values()) > 0 and sent
    again, sent = run()
    assert sent == []  # neither reads nor writes
    assert all(s.skipped and s.unchanged == first[k].observations for k, s in again.items())
    verified, sent = run(FITONFHIR_FHIR_VERIFY="true")
    assert sent and all(method == "POST" for method, _ in sent if method != "GET")
    assert sum(s.created + s.updated for s in verified.values()) == 0
    assert sum(s.unchanged for s in verified.values()) == sum(s.observations for s in first.values())


class _InFlight(FhirClient):
    """The real client, counting how many of its transactions are in flight at once."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.now = self.most = 0
        self._guard = threading.Lock()

    def transaction(self, *args, **kwargs):
        with self._guard:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return super().transaction(*args, **kwargs)
        finally:
            with self._guard:
                self.now -= 1


def test_the_days_of_a_single_user_run_are_written_side_by_side(stores, sandbox):
    """A backfill of one user no longer writes one day after another while the other workers idle."""
    user = _onboard(stores, sandbox, "alone@example.com")
    sandbox.add_fault(path="^/fhir/?$", method="POST", delay=0.3, count=None)  # a FHIR server far away
    fhir = _InFlight(sandbox.fhir_url)
    templates = generate_templates(sample_data_sources(), style="standard")
    keys = [(day, user.key) for day in DAYS]
    outcomes = run_all(stores, keys, STEPS, fhir=fhir, templates=templates, workers=3)
    assert [str(o.error) for o in outcomes if not o.ok] == []
    assert sorted(o.day for o in outcomes) == DAYS
    assert 1 < fhir.most <= 3 * 4  # several days at once, bounded: workers x chunks in flight per day
    for o in outcomes:
        written = o.summaries["fhir_observations"]
        assert written.observations == o.summaries["fit_datasets"].points == written.created


def test_an_interrupt_lets_the_days_in_hand_finish_and_reports_the_queued_days_with_their_fetch_only(
    stores, sandbox
):
    user = _onboard(stores, sandbox, "interrupted@example.com")
    sandbox.add_fault(path="^/fhir/?$", method="POST", delay=0.5, count=None)  # writes slower than fetches
    templates = generate_templates(sample_data_sources(), style="standard")
    keys = [(day, user.key) for day in DAYS]
    outcomes = iter_user_days(
        stores, keys, STEPS, fhir=FhirClient(sandbox.fhir_url), templates=templates, workers=1
    )
    first = next(outcomes)  # one user-day written; the others are fetched and queued or in hand
    assert first.ok and "fhir_observations" in first.summaries
    after: list = []
    with pytest.raises(KeyboardInterrupt):  # what the framework raises on SIGINT while the step waits
        outcome = outcomes.throw(KeyboardInterrupt())
        while True:
            after.append(outcome)
            outcome = next(outcomes)
    assert sorted(o.day for o in [first, *after]) == DAYS  # every day is reported, none twice
    written = [o for o in after if "fhir_observations" in o.summaries]
    assert len(written) <= 1  # one worker: at most the user-day in hand was written after the interrupt
    assert all(o.ok and set(o.summaries) == {"fit_datasets"} for o in after if o not in written)
