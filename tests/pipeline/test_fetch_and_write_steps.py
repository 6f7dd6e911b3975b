"""The fetch step under refresh-token rotation, and the FHIR write step against a server refusing our ids."""

import pytest

from fitonfhir_dagster.fhir.fhir_client import WRITE_MODE_CONDITIONAL_CREATE, FhirClient
from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.googlefit.catalog import sample_data_sources
from fitonfhir_dagster.pipeline.datasets import fetch_user_day
from fitonfhir_dagster.pipeline.messages import build_user_day_messages
from fitonfhir_dagster.pipeline.observations import convert_user_day
from fitonfhir_dagster.pipeline.step_errors import UserNotImportable
from fitonfhir_dagster.pipeline.step_stores import StepStores
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.archive import LocalArchive
from fitonfhir_dagster.stores.users import SqliteUsersTable, UserState
from fitonfhir_dagster.stores.vault import LocalTokenVault
from fitonfhir_sandbox.fhir_server import create_fhir_app
from fitonfhir_sandbox.handle import running_sandbox
from onboarding_app.serving import serve_in_background

DAY = "2026-11-20"
EMAIL = "rotation@example.com"


class _StaleFirstRead:
    """The vault as another run left it: the first read still returns the token it had before rotating."""

    def __init__(self, vault, stale):
        self.vault, self.stale = vault, stale

    def get(self, user_key):
        stale, self.stale = self.stale, None
        return stale or self.vault.get(user_key)

    def put(self, user_key, token):
        self.vault.put(user_key, token)

    def delete(self, user_key):
        self.vault.delete(user_key)


@pytest.fixture
def sandbox(tmp_path):
    with running_sandbox(tmp_path / "sandbox", rotate_refresh_tokens=True) as sandbox:
        yield sandbox


@pytest.fixture
def stores(tmp_path, sandbox):
    settings = Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_SANDBOX_URL": sandbox.url})
    users = SqliteUsersTable(tmp_path / "users.sqlite3")
    return StepStores(
        settings, users, LocalTokenVault(tmp_path / "vault"), LocalArchive(tmp_path / "archive")
    )


def _onboard(stores, sandbox):
    tokens = sandbox.onboard(EMAIL)
    user = stores.users.upsert_onboarded(
        google_sub=sandbox.sub_for_email(EMAIL), google_issuer=sandbox.url, patient_id="patient-1"
    )
    stores.vault.put(user.key, tokens["refresh_token"])
    return user, tokens["refresh_token"]


def test_a_token_rotated_by_a_concurrent_run_is_picked_up_instead_of_marking_the_user_unauthorized(
    stores, sandbox
):
    user, first_token = _onboard(stores, sandbox)
    rotated = sandbox.refresh(first_token).json()["refresh_token"]  # another run refreshed and rotated
    stores.vault.put(user.key, rotated)
    racing = StepStores(
        stores.settings, stores.users, _StaleFirstRead(stores.vault, first_token), stores.archive
    )

    summary = fetch_user_day(racing, DAY, user.key)

    assert summary.points > 0
    assert stores.users.get(user.key).state is UserState.ACTIVE


def test_a_revoked_grant_marks_the_user_unauthorized_and_is_not_retried_with_the_same_token(stores, sandbox):
    user, _ = _onboard(stores, sandbox)
    sandbox.revoke_user(user.google_sub)
    with pytest.raises(UserNotImportable, match="user marked unauthorized"):
        fetch_user_day(stores, DAY, user.key)
    assert stores.users.get(user.key).state is UserState.UNAUTHORIZED


def test_observations_reach_a_server_that_refuses_client_ids_and_a_rerun_writes_nothing(
    stores, sandbox, tmp_path
):
    user, _ = _onboard(stores, sandbox)
    fetch_user_day(stores, DAY, user.key)
    build_user_day_messages(stores, DAY, user.key)
    templates = generate_templates(sample_data_sources(), style="standard")
    with serve_in_background(create_fhir_app(tmp_path / "strict.sqlite3", update_create=False)) as url:
        fhir = FhirClient(url)
        first = convert_user_day(stores, fhir, templates, DAY, user.key)
        assert fhir.write_mode == WRITE_MODE_CONDITIONAL_CREATE
        assert first.created == first.observations > 0 and first.dead_letters == 0
        again = convert_user_day(stores, FhirClient(url), templates, DAY, user.key)
        assert (again.created, again.updated, again.unchanged) == (0, 0, first.observations)
        total = fhir.search_bundle("Observation", {"_summary": "count"})["total"]
        assert total == first.observations
