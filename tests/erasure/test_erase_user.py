"""`fitonfhir users erase KEY` and the `erase_user` job, through the real CLI against the sandbox FHIR server.

Users are onboarded and imported by `fitonfhir demo` (real processes, a real Dagster instance on disk);
the erasure then runs as its own `fitonfhir` process and is checked on the FHIR server, the archive, the
vault, the users table and the instance.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest

from fitonfhir_dagster.fhir.fhir_client import FhirClient
from fitonfhir_dagster.medtech.identity import hashed_id
from fitonfhir_dagster.settings import Settings
from fitonfhir_dagster.stores.factory import open_archive, open_users_table, open_vault
from fitonfhir_dagster.stores.users import UserState

FITONFHIR = Path(sys.executable).with_name("fitonfhir")


def _env(home: Path, sandbox, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITONFHIR_", "DAGSTER_"))}
    return env | {"FITONFHIR_HOME": str(home), **sandbox.env(), "FITONFHIR_RETRY_DELAY_SECONDS": "0", **extra}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FITONFHIR), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _observations(fhir: FhirClient, patient: str) -> int:
    return int(
        fhir.search_bundle("Observation", {"subject": f"Patient/{patient}", "_summary": "count"})["total"]
    )


class Imported:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env = home, env
        self.settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("FITONFHIR_")})
        self.users = open_users_table(self.settings)
        self.fhir = FhirClient.from_settings(self.settings)
        self.keys = [u.key for u in self.users.list()]

    def archive_names(self, key: str) -> list[str]:
        return [n for n in open_archive(self.settings).list() if f"/user={key}/" in n]

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home / "dagster"))


def _import(tmp_path_factory, sandbox, users: int, **extra: str) -> Imported:
    home = tmp_path_factory.mktemp("erase") / "home"
    env = _env(home, sandbox, **extra)
    done = _cli(env, "demo", "--users", str(users), "--days", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    imported = Imported(home, env)
    assert len(imported.keys) == users
    return imported


@pytest.fixture(scope="module")
def imported(tmp_path_factory, sandbox) -> Imported:
    return _import(tmp_path_factory, sandbox, users=2)


def test_erase_deletes_the_users_observations_archive_and_token_and_nothing_of_the_others(imported) -> None:
    gone, kept = imported.keys
    patient_gone = imported.users.get(gone).patient_id
    patient_kept = imported.users.get(kept).patient_id
    before_gone, before_kept = (
        _observations(imported.fhir, patient_gone),
        _observations(imported.fhir, patient_kept),
    )
    kept_names = imported.archive_names(kept)
    assert before_gone > 0 and before_kept > 0 and imported.archive_names(gone) and kept_names
    with imported.instance() as instance:
        assert instance.has_dynamic_partition("users", gone)

    done = _cli(imported.env, "users", "erase", gone, "--yes")

    assert done.returncode == 0, done.stderr
    audit = json.loads(done.stdout.strip().splitlines()[-1])
    assert audit["event"] == "user_erased" and audit["user_key"] == gone
    assert audit["observations"] == before_gone and audit["token_deleted"] is True
    assert audit["partition_removed"] is True and audit["archive_objects"] > 0
    assert _observations(imported.fhir, patient_gone) == 0
    assert _observations(imported.fhir, patient_kept) == before_kept
    assert imported.fhir.read("Patient", patient_gone) is not None  # identity mode patient: the EHR's Patient
    assert imported.archive_names(gone) == []
    assert imported.archive_names(kept) == kept_names
    vault = open_vault(imported.settings)
    assert vault.get(gone) is None and vault.get(kept) is not None
    assert imported.users.get(gone).state == UserState.ERASED
    assert imported.users.get(kept).state == UserState.ACTIVE
    with imported.instance() as instance:
        assert not instance.has_dynamic_partition("users", gone)
        assert instance.has_dynamic_partition("users", kept)
    # one audit line without PHI: no Google sub, Patient id or e-mail in the archived record
    archive = open_archive(imported.settings)
    (audit_name,) = [n for n in archive.list("audit/erasures/") if gone in n]
    record = archive.get(audit_name).decode()
    user = imported.users.get(gone)
    assert json.loads(record) == audit
    assert user.google_sub not in record and user.patient_id not in record and "@" not in record

    again = _cli(imported.env, "users", "erase", gone, "--yes")  # idempotent: finishes an interrupted one
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["observations"] == 0


def test_erase_refuses_while_a_run_of_the_user_is_in_flight(imported) -> None:
    _, kept = imported.keys
    patient = imported.users.get(kept).patient_id
    before = _observations(imported.fhir, patient)
    run_id = str(uuid.uuid4())
    with imported.instance() as instance:  # a started range run covering the user, as the users_sensor makes
        instance.add_run(
            dg.DagsterRun(
                job_name="user_day_import",
                run_id=run_id,
                status=dg.DagsterRunStatus.STARTED,
                tags={
                    "dagster/asset_partition_range_start": f"2025-01-01|{kept}",
                    "dagster/asset_partition_range_end": f"2025-01-02|{kept}",
                },
            )
        )
    try:
        done = _cli(imported.env, "users", "erase", kept, "--yes")
        assert done.returncode == 1
        assert "refusing to erase" in done.stderr and run_id in done.stderr
        assert _observations(imported.fhir, patient) == before
        assert imported.users.get(kept).state == UserState.ACTIVE
    finally:
        with imported.instance() as instance:
            instance.delete_run(run_id)


def test_bad_input_gets_a_clear_error(imported) -> None:
    done = _cli(imported.env, "users", "erase", "../etc", "--yes")
    assert done.returncode == 2 and "not a valid user key" in done.stderr
    done = _cli(imported.env, "users", "erase", "u-unknown0000", "--yes")
    assert done.returncode == 1 and "no user with key 'u-unknown0000'" in done.stderr
    done = _cli(imported.env, "users", "erase", imported.keys[1], "--yes", "--dagster-home", "/nonexistent/x")
    assert done.returncode == 2 and "no Dagster instance" in done.stderr
    assert imported.users.get(imported.keys[1]).state == UserState.ACTIVE


def test_erase_refuses_while_an_import_holds_the_users_lease_and_changes_nothing(imported) -> None:
    # an import no run tag reveals (a script, a run started before the check) holds the user's lease
    _, kept = imported.keys
    patient = imported.users.get(kept).patient_id
    before, names = _observations(imported.fhir, patient), imported.archive_names(kept)
    assert imported.users.claim_import(kept, "run-elsewhere", 600)
    try:
        env = {**imported.env, "FITONFHIR_USER_LEASE_WAIT_SECONDS": "1"}
        done = _cli(env, "users", "erase", kept, "--yes")
        assert done.returncode == 1
        # it said whom it waited for, then why it gave up
        assert f"user {kept} is being imported by run run-elsewhere" in done.stderr
        assert "refusing to erase" in done.stderr and "kept its import lease" in done.stderr
        assert "FITONFHIR_USER_LEASE_WAIT_SECONDS" in done.stderr
        assert imported.users.get(kept).state == UserState.ACTIVE
        assert _observations(imported.fhir, patient) == before
        assert imported.archive_names(kept) == names
        assert open_vault(imported.settings).get(kept) is not None
        assert imported.users.import_holder(kept) == "run-elsewhere"
    finally:
        imported.users.release_import(kept, "run-elsewhere")


def test_the_erase_user_job_waits_for_the_import_holding_the_lease_then_erases_like_the_cli(
    imported, monkeypatch
) -> None:
    _, key = imported.keys
    patient = imported.users.get(key).patient_id
    before = _observations(imported.fhir, patient)
    assert before > 0
    for name, value in imported.env.items():
        if name.startswith("FITONFHIR_"):
            monkeypatch.setenv(name, value)
    from fitonfhir_dagster.definitions import defs

    job = defs().resolve_job_def("erase_user")
    # An import holds the user's lease. Once the erasure says it waits for that run, the test looks
    # (nothing may have changed yet) and the import gives the lease up.
    assert imported.users.claim_import(key, "run-importing", 600)
    waiting, job_done = threading.Event(), threading.Event()

    class WaitSeen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "run-importing" in record.getMessage() and "waits up to" in record.getMessage():
                waiting.set()

    while_held: dict[str, object] = {}

    def the_import_finishes() -> None:
        while not (waiting.wait(0.05) or job_done.is_set()):
            pass
        while_held["erasure waited"] = waiting.is_set()
        while_held["state"] = imported.users.get(key).state
        while_held["observations"] = _observations(imported.fhir, patient)
        imported.users.release_import(key, "run-importing")

    leases_log = logging.getLogger("fitonfhir_dagster.pipeline.leases")
    seen, level = WaitSeen(), leases_log.level
    leases_log.addHandler(seen)
    leases_log.setLevel(logging.INFO)
    importer = threading.Thread(target=the_import_finishes)
    importer.start()
    try:
        with imported.instance() as instance:
            result = job.execute_in_process(
                instance=instance, run_config={"ops": {"erase_user_data": {"config": {"user_key": key}}}}
            )
            assert result.success
            assert not instance.has_dynamic_partition("users", key)
    finally:
        job_done.set()
        importer.join()
        leases_log.removeHandler(seen)
        leases_log.setLevel(level)
    assert while_held == {"erasure waited": True, "state": UserState.ACTIVE, "observations": before}
    assert imported.users.import_holder(key) is None  # the erasure gave its lease up
    assert _observations(imported.fhir, patient) == 0
    assert imported.users.get(key).state == UserState.ERASED
    assert imported.archive_names(key) == []


def test_identity_mode_create_also_deletes_the_devices_and_the_patient_it_created(
    tmp_path_factory, sandbox
) -> None:
    imported = _import(tmp_path_factory, sandbox, users=1, FITONFHIR_IDENTITY_MODE="create")
    (key,) = imported.keys
    created = hashed_id(None, imported.users.get(key).google_sub)
    devices = imported.fhir.search("Device", {"patient": f"Patient/{created}"})
    assert _observations(imported.fhir, created) > 0 and devices
    assert imported.fhir.read("Patient", created) is not None

    done = _cli(imported.env, "users", "erase", key, "--yes")

    assert done.returncode == 0, done.stderr
    audit = json.loads(done.stdout.strip().splitlines()[-1])
    assert audit["devices"] == len(devices) and audit["patients"] == 1
    assert _observations(imported.fhir, created) == 0
    assert imported.fhir.search("Device", {"patient": f"Patient/{created}"}) == []
    assert imported.fhir.read("Patient", created) is None
    onboarded = imported.users.get(key).patient_id
    assert imported.fhir.read("Patient", onboarded) is not None  # the onboarding's Patient is not ours
