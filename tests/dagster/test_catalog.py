"""The catalog a data engineer trusts: descriptions, owners, tags, kinds that follow the configuration,
definition metadata, a template version that moves with the templates, and a freshness check."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage

from fitonfhir_dagster.definitions import defs
from fitonfhir_dagster.defs.freshness import yesterday_imported_for_every_active_user
from fitonfhir_dagster.defs.resources import resources_from_env
from fitonfhir_dagster.stores.users import SqliteUsersTable


@pytest.fixture
def loaded(tmp_path, monkeypatch):
    def load(**env: str) -> dg.Definitions:
        for name, value in {"FITONFHIR_HOME": str(tmp_path), **env}.items():
            monkeypatch.setenv(name, value)
        # A Dagster instance another test left to the garbage collector can still be the context's
        # definitions-state storage; loading must not reach for it.
        with set_defs_state_storage(None):
            return defs()

    return load


def test_every_asset_and_check_has_a_description_an_owner_and_the_phi_tag(loaded):
    graph = loaded().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.owners == ["team:fit-on-fhir"], key
        assert node.tags.get("contains_phi") == "true", key
        assert "dagster/code_references" in node.metadata, key
    for check in graph.asset_check_keys:
        assert graph.get_check_spec(check).description, check


def test_kinds_and_definition_metadata_follow_the_configuration(loaded, tmp_path):
    plain = loaded().resolve_assets_def("device_messages").specs_by_key[dg.AssetKey("device_messages")]
    assert "azure" not in plain.kinds  # no Event Hub configured
    assert plain.metadata["fhir_base_url"].value.endswith("/fhir")
    assert plain.metadata["archive_location"] == str(tmp_path / "archive")
    assert plain.metadata["templates"] == "generated, style standard"
    hub = loaded(
        FITONFHIR_EVENTHUB_NAMESPACE="ns.servicebus.windows.net", FITONFHIR_TEMPLATE_STYLE="original"
    )
    spec = hub.resolve_assets_def("device_messages").specs_by_key[dg.AssetKey("device_messages")]
    assert {"azure", "eventhubs"} <= spec.kinds
    assert spec.metadata["templates"] == "generated, style original"


def test_the_template_version_is_the_hash_of_the_templates_in_use(loaded):
    standard = loaded().resolve_assets_def("medtech_templates")
    original = loaded(FITONFHIR_TEMPLATE_STYLE="original").resolve_assets_def("medtech_templates")
    [v1] = standard.code_versions_by_key.values()
    [v2] = original.code_versions_by_key.values()
    assert v1 and v2 and v1 != v2
    again = loaded(FITONFHIR_TEMPLATE_STYLE="standard").resolve_assets_def("medtech_templates")
    assert again.code_versions_by_key == standard.code_versions_by_key  # stable for the same templates


def test_templates_never_materialized_are_requested_by_their_automation_condition(loaded):
    definitions = loaded()
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs=definitions, instance=instance)
        assert result.total_requested == 1
        assert [r.key for r in result.results if r.true_subset.size] == [dg.AssetKey("medtech_templates")]


def test_the_freshness_check_fails_for_an_active_user_without_yesterday(tmp_path):
    table = SqliteUsersTable(tmp_path / "users.sqlite3")
    keys = [
        table.upsert_onboarded(google_sub=str(i), google_issuer="https://sandbox", patient_id=f"p{i}").key
        for i in (1, 2)
    ]
    with sqlite3.connect(tmp_path / "users.sqlite3") as db:  # both onboarded a week ago
        db.execute("UPDATE users SET created_at = ?", ((datetime.now(UTC) - timedelta(days=7)).isoformat(),))
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization("fhir_observations", partition=f"{yesterday}|{keys[0]}")
        )
        context = dg.build_asset_check_context(
            resources=resources_from_env({"FITONFHIR_HOME": str(tmp_path)}), instance=instance
        )
        result = yesterday_imported_for_every_active_user(context)
    assert not result.passed
    assert result.metadata["missing"].value == [keys[1]]
    assert result.metadata["active_users"].value == 2
