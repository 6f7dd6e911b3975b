"""Key Vault token vault, checked on the wire: the real SecretClient talks to an in-memory Key Vault
transport (tests/support/keyvault.py), since Key Vault itself has no emulator and cannot run here."""

from __future__ import annotations

import logging
import re
import traceback

import pytest
from azure.core.exceptions import ResourceExistsError

from fitonfhir_dagster.settings import ConfigError, Settings
from fitonfhir_dagster.stores.azure_keyvault import API_VERSION, KeyVaultTokenVault, secret_name
from fitonfhir_dagster.stores.vault import VaultError
from tests.support.keyvault import KeyVaultWire, StaticTokenCredential

TOKEN = "1//0gREFRESH-token-never-to-be-seen-Xy7"
KEY = "u-abcdefgh01"
NAME = "refresh-token-u-abcdefgh01"


@pytest.fixture
def wire() -> KeyVaultWire:
    return KeyVaultWire()


@pytest.fixture
def credential() -> StaticTokenCredential:
    return StaticTokenCredential()


@pytest.fixture
def vault(wire: KeyVaultWire, credential: StaticTokenCredential) -> KeyVaultTokenVault:
    return KeyVaultTokenVault(wire.secret_client(credential, api_version=API_VERSION))


def calls(wire: KeyVaultWire) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in wire.authorized_requests()]


def test_secret_names_come_from_the_user_key_and_are_valid_key_vault_names() -> None:
    assert secret_name(KEY) == NAME
    assert re.fullmatch(r"[0-9a-zA-Z-]{1,127}", secret_name("u-" + "z" * 32))
    with pytest.raises(ValueError, match="not a valid user key"):
        secret_name("google-sub-1234567890")


def test_get_of_a_missing_secret_is_none_after_the_auth_challenge(
    wire: KeyVaultWire, vault: KeyVaultTokenVault, credential: StaticTokenCredential
) -> None:
    assert vault.get(KEY) is None

    first, second = wire.requests
    assert (first.method, first.path, first.authorized) == ("GET", f"/secrets/{NAME}/", False)  # elicits 401
    assert (second.method, second.path, second.authorized) == ("GET", f"/secrets/{NAME}/", True)
    assert second.query == {"api-version": API_VERSION}
    assert credential.scopes == [("https://vault.azure.net/.default",)]


def test_put_of_a_new_secret_checks_the_deleted_collection_then_sets(
    wire: KeyVaultWire, vault: KeyVaultTokenVault
) -> None:
    vault.put(KEY, TOKEN)

    assert calls(wire) == [("GET", f"/deletedsecrets/{NAME}"), ("PUT", f"/secrets/{NAME}")]
    put = wire.authorized_requests()[-1]
    assert put.body is not None and put.body["value"] == TOKEN
    assert all(r.query == {"api-version": API_VERSION} for r in wire.requests)
    assert vault.get(KEY) == TOKEN


def test_put_recovers_a_soft_deleted_secret_before_setting_it(
    wire: KeyVaultWire, vault: KeyVaultTokenVault
) -> None:
    vault.put(KEY, TOKEN)
    vault.delete(KEY)
    assert NAME in wire.deleted
    wire.requests.clear()

    vault.put(KEY, TOKEN + "-new")

    assert calls(wire) == [
        ("GET", f"/deletedsecrets/{NAME}"),  # found in the deleted collection
        ("POST", f"/deletedsecrets/{NAME}/recover"),
        ("GET", f"/secrets/{NAME}/"),  # the SDK's recovery poller: recovered
        ("PUT", f"/secrets/{NAME}"),
    ]
    assert wire.authorized_requests()[-1].body["value"] == TOKEN + "-new"
    assert vault.get(KEY) == TOKEN + "-new"
    assert [value for _, value in wire.secrets[NAME].versions] == [TOKEN, TOKEN + "-new"]


def test_the_stand_in_refuses_to_set_a_soft_deleted_name_like_key_vault(wire: KeyVaultWire) -> None:
    """Why recovery matters: without it, Key Vault answers 409 Conflict."""
    client = wire.secret_client(api_version=API_VERSION)
    client.set_secret(NAME, TOKEN)
    client.begin_delete_secret(NAME)

    with pytest.raises(ResourceExistsError):
        client.set_secret(NAME, TOKEN)


def test_delete_begins_deletion_without_waiting(wire: KeyVaultWire, vault: KeyVaultTokenVault) -> None:
    vault.put(KEY, TOKEN)
    wire.requests.clear()

    vault.delete(KEY)
    vault.delete(KEY)  # already gone: nothing to do

    assert calls(wire) == [("DELETE", f"/secrets/{NAME}"), ("DELETE", f"/secrets/{NAME}")]
    assert NAME in wire.deleted and NAME not in wire.secrets


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("PUT", "/secrets/", lambda v: v.put(KEY, TOKEN)),
        ("GET", "/deletedsecrets/", lambda v: v.put(KEY, TOKEN)),
        ("GET", "/secrets/", lambda v: v.get(KEY)),
        ("DELETE", "/secrets/", lambda v: v.delete(KEY)),
    ],
)
def test_service_refusals_are_vault_errors_that_never_show_the_token(
    wire: KeyVaultWire, vault: KeyVaultTokenVault, caplog: pytest.LogCaptureFixture, method, path, operation
) -> None:
    vault.put(KEY, TOKEN)
    caplog.set_level(logging.DEBUG)
    wire.fail_next(method, path, 403, "Forbidden")

    with pytest.raises(VaultError, match=rf"{KEY}: HTTP 403 \(Forbidden\)") as caught:
        operation(vault)

    assert TOKEN not in "".join(traceback.format_exception(caught.value))
    assert TOKEN not in caplog.text


def test_from_settings_uses_the_vault_url_and_pins_the_api_version(tmp_path) -> None:
    url = "https://fitonfhir-prod.vault.azure.net/"
    vault = KeyVaultTokenVault.from_settings(
        Settings.from_env({"FITONFHIR_HOME": str(tmp_path), "FITONFHIR_KEYVAULT_URL": url})
    )
    assert vault.client.vault_url == url.rstrip("/")
    assert vault.client.api_version == API_VERSION

    with pytest.raises(ConfigError, match="FITONFHIR_KEYVAULT_URL"):
        KeyVaultTokenVault.from_settings(Settings.from_env({"FITONFHIR_HOME": str(tmp_path)}))
