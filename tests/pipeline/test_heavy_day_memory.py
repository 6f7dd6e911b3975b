"""A heavy user's memory is bounded: a day twice as heavy does not need twice the memory (issues 9 and 10).

Every step holds a bounded working set (a page of points, a chunk of messages being converted, the FHIR
Bundles in flight, the spools' in-memory part) plus a compact key per point of the day (its start, end
and values as text, to recognise duplicates; its Observation id, to count each once). So the peak of a
user-day through the three steps must grow far slower than the day. The buffers are scaled down here
(pages of 200 points, conversion chunks of 1,000 points, Bundles of 100, spools of 256 KiB in memory)
so that days of 4,000 and 8,000 points are "heavy" for them and the test stays quick; the sandbox runs
in a process of its own, so only the import's allocations are traced.

Threshold: the 8k-point day's traced peak must stay below 1.5x the 4k-point day's (measured: 7.7 and
8.8 MB, 1.15x). Any step that holds the day's points as Python objects (about 1 KB each: the document
parsed whole, every Observation of the day at once, a 4 KB orjson buffer per point key) makes the peak
proportional to the day and the ratio close to 2: the code before this test measured 43.1 and 82.6 MB,
1.92x.
"""

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.pipeline import datasets, messages, observations
from fitonfhir_dagster.pipeline.runner import STEPS, iter_user_days
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.handle import running_sandbox_process

DAY = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()  # complete, every upload arrived
POINTS = 4_000
MAX_RATIO = 1.5


@pytest.fixture
def small_buffers(monkeypatch):
    monkeypatch.setattr(observations, "CONVERT_CHUNK_POINTS", 1_000)
    monkeypatch.setattr(datasets, "SPOOL_IN_MEMORY", 256 << 10)
    monkeypatch.setattr(messages, "SPOOL_IN_MEMORY", 256 << 10)


def _traced_peak_of_one_day(tmp_path, sandbox, points):
    home = tmp_path / f"home-{points}"
    settings = Settings.from_env(
        {
            "FITONFHIR_HOME": str(home),
            "FITONFHIR_SANDBOX_URL": sandbox.url,
            "FITONFHIR_MAX_REQUESTS_PER_MINUTE": "0",
            "FITONFHIR_PAGE_LIMIT": "200",
            "FITONFHIR_FHIR_BUNDLE_SIZE": "100",
        }
    )
    stores = StepStores(
        settings,
        SqliteUsersTable(home / "users.sqlite3"),
        LocalTokenVault(home / "vault"),
        LocalArchive(home / "archive"),
    )
    email = f"memory+heavy{points}@example.com"
    tokens = sandbox.onboard(email)
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(email), google_issuer=sandbox.url, patient_id=f"p-{points}"
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    fhir = FhirClient(sandbox.fhir_url, bundle_size=100)
    templates = generate_templates(sample_data_sources(), style="standard")

    tracemalloc.start()
    try:
        (outcome,) = iter_user_days(stores, [(DAY, user.key)], STEPS, fhir=fhir, templates=templates)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.ok, outcome.error
    fetched = outcome.summaries["fit_datasets"].points
    observed = outcome.summaries["fhir_observations"]
    assert points <= fetched < points + 1_000  # the heavy heart rate and a normal day of the rest
    assert observed.points_in == fetched and observed.points_unaccounted == 0
    assert observed.points_observed == fetched  # every point ends as an Observation
    return peak, fetched


def test_a_day_twice_as_heavy_does_not_need_twice_the_memory(tmp_path, small_buffers):
    with running_sandbox_process(tmp_path / "sandbox") as sandbox:
        peak, fetched = _traced_peak_of_one_day(tmp_path, sandbox, POINTS)
        heavier_peak, heavier = _traced_peak_of_one_day(tmp_path, sandbox, 2 * POINTS)
    assert heavier > 1.8 * fetched
    ratio = heavier_peak / peak
    assert ratio < MAX_RATIO, (
        f"{heavier} points peaked at {heavier_peak / 1e6:.1f} MB, {ratio:.2f}x the {peak / 1e6:.1f} MB"
        f" of {fetched} points: something holds the day's points again"
    )
