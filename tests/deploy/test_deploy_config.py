"""The production deployment shipped in deploy/: the instance YAML runs on a real PostgreSQL server, the Helm
values validate against the installed dagster / dagster-k8s config schemas, the manifests hang together.

Nothing here renders the chart with Helm or talks to Kubernetes (no cluster, no Docker engine on this
machine): the Helm values are mapped to instance config the way the chart's templates do
(``helm/dagster/templates/helpers/instance/*.tpl`` of dagster/dagster) and that is what gets validated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml
from click.testing import CliRunner
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._grpc.client import DagsterGrpcClient
from dagster._serdes import deserialize_value
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PG_VARS = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dagster_home(tmp_path: Path, config: dict | None = None) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    if config is None:
        shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.fixture
def pg_env(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The DAGSTER_PG_* variables of deploy/dagster.yaml, pointing at a fresh database of the real server."""
    db = "dagster_" + uuid.uuid4().hex[:10]
    postgres.create_database(db)
    env = {
        "DAGSTER_PG_HOST": postgres.host,
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": postgres.password,
        "DAGSTER_PG_DB": db,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# -- (a) deploy/dagster.yaml ------------------------------------------------------------------------


def test_dagster_yaml_validates_against_the_installed_instance_schema(tmp_path) -> None:
    config, custom_class = dagster_instance_config(str(dagster_home(tmp_path)))

    assert custom_class is None
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = {limit["key"]: limit for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]}
    assert limits["fitonfhir/user"] == {
        "key": "fitonfhir/user",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    }
    assert limits["dagster/partition/user"]["limit"] == 1
    assert config["telemetry"] == {"enabled": False}


def test_every_connection_setting_comes_from_the_environment(tmp_path) -> None:
    storage = load(DEPLOY / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    scheme = storage.pop("scheme")
    assert sorted(v["env"] for v in storage.values()) == sorted(PG_VARS)
    assert scheme == "postgresql+psycopg2"  # the one driver installed (SQLAlchemy 2.1 would pick psycopg 3)


@pytest.mark.parametrize("missing", PG_VARS)
def test_a_missing_connection_variable_is_an_error_not_a_fallback(
    pg_env, tmp_path, monkeypatch, missing: str
) -> None:
    monkeypatch.delenv(missing)
    home = dagster_home(tmp_path)

    with pytest.raises(DagsterInvalidConfigError, match=missing):
        dg.DagsterInstance.from_config(str(home))
    assert not list(home.glob("**/*.db"))  # no SQLite storage was created instead


def test_an_instance_from_dagster_yaml_runs_on_the_real_postgres(
    postgres: PostgresServer, pg_env, tmp_path, monkeypatch
) -> None:
    home = dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.asset(pool="google_fit_api")
    def probe() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"ok": True})

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 300
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert (instance.run_retries_enabled, instance.run_retries_max_retries) == (True, 2)
        assert instance.run_retries_retry_on_asset_or_op_failure  # the step opts its own failures out
        assert not instance.telemetry_enabled
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 4
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert "fitonfhir/user" in {t["key"] for t in concurrency.run_queue_config.tag_concurrency_limits}

        result = dg.materialize([probe], instance=instance)
        assert result.success
        # the pool got its default limit, stored in Postgres; an explicit limit is set the documented way
        assert instance.event_log_storage.get_concurrency_info("google_fit_api").slot_count == 4
        instance.event_log_storage.set_concurrency_slots("google_fit_api", 2)
        assert instance.event_log_storage.get_concurrency_info("google_fit_api").slot_count == 2

    # the run and its materialization are rows of the real server's database
    with psycopg2.connect(postgres.url(pg_env["DAGSTER_PG_DB"])) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone() == ("SUCCESS",)
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (result.run_id, "ASSET_MATERIALIZATION"),
        )
        assert cur.fetchone() == (1,)
    assert not list(home.glob("**/*.db"))


def test_the_code_server_command_of_the_dockerfile_serves_the_definitions(pg_env, tmp_path) -> None:
    """The image's CMD, run here as a process (no container): it loads fitonfhir_dagster.definitions and
    answers gRPC health checks with the production instance config in DAGSTER_HOME."""
    cmd = docker_cmd()
    port = str(free_port())
    args = [a if a != "4000" else port for a in cmd]
    args[args.index("0.0.0.0")] = "127.0.0.1"
    home = dagster_home(tmp_path)
    env = {**os.environ, "DAGSTER_HOME": str(home), "FITONFHIR_HOME": str(tmp_path / "fitonfhir")}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen(
        [str(dagster), *args[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    client = DagsterGrpcClient(port=int(port), host="127.0.0.1")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.health_check_query() == "SERVING":
                    break
            except Exception:  # not listening yet
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "code server did not become healthy in 120 s"
            time.sleep(0.5)
        response = deserialize_value(client.list_repositories())
        (pointer,) = response.repository_code_pointer_dict.values()
        assert pointer.module == "fitonfhir_dagster.definitions"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_cmd() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("CMD "))
    return yaml.safe_load(line[len("CMD ") :])  # the exec form is a JSON array


def test_the_dockerfile_installs_the_lock_and_serves_the_code_location_on_port_4000() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert [line for line in text.splitlines() if line.startswith("FROM ")] == ["FROM python:3.11-slim"]
    assert "pip install -r requirements.lock" in text
    assert "pip install --no-deps ." in text
    assert "EXPOSE 4000" in text
    assert "USER 10001" in text
    cmd = docker_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("--port") + 1] == "4000"
    assert cmd[cmd.index("--module-name") + 1] == "fitonfhir_dagster.definitions"
    for name in ("dagster-postgres", "dagster-k8s", "psycopg2-binary"):  # the run pods need both integrations
        assert any(
            line.startswith(name + "==") for line in (ROOT / "requirements.lock").read_text().splitlines()
        )


# -- (b) Helm values --------------------------------------------------------------------------------


def values() -> dict[str, Any]:
    return load(DEPLOY / "helm" / "values.yaml")


def names(refs: list[dict[str, str]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


def k8s_run_launcher_config(v: dict[str, Any], release: str = "fitonfhir") -> dict[str, Any]:
    """``config`` of the run_launcher block the chart renders (dagsterYaml.runLauncher.k8s)."""
    k = v["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = k.get("runK8sConfig", {})
    keys = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    config: dict[str, Any] = {
        "load_incluster_config": k["loadInclusterConfig"],
        "job_namespace": k.get("jobNamespace") or release,
        "image_pull_policy": k["imagePullPolicy"],
        "service_account_name": v["global"]["serviceAccountName"],
        "dagster_home": v["global"]["dagsterHome"],
        "instance_config_map": f"{release}-dagster-instance",
        "postgres_password_secret": v["global"]["postgresqlSecretName"],
        "env_config_maps": names(k.get("envConfigMaps")),
        "env_secrets": names(k.get("envSecrets")),
        "env_vars": k.get("envVars", []),
        "labels": k.get("labels", {}),
        "resources": k.get("resources", {}),
        "fail_pod_on_run_failure": bool(k.get("failPodOnRunFailure")),
        "run_k8s_config": {keys[key]: value for key, value in run_k8s.items()},
    }
    return config


def instance_config_from_values(v: dict[str, Any]) -> dict[str, Any]:
    """The instance settings the chart renders from these values (configmap-instance.yaml and its helpers),
    minus the run launcher (validated separately against dagster-k8s)."""
    pg = v["postgresql"]
    postgres = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},  # the chart injects the secret as this variable
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
            "scheme": pg.get("postgresqlScheme", "postgresql"),
        }
    }
    daemon = v["dagsterDaemon"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    qrc = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    concurrency = v["concurrency"]
    retention = v["retention"]
    return {
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": postgres,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": postgres,
        },
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": postgres,
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": daemon["runCoordinator"]["type"],
            **({"config": qrc} if qrc else {}),
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "sensors": {
            "use_threads": daemon["sensors"]["useThreads"],
            "num_workers": daemon["sensors"]["numWorkers"],
        },
        "schedules": {
            "use_threads": daemon["schedules"]["useThreads"],
            "num_workers": daemon["schedules"]["numWorkers"],
        },
        "concurrency": {
            "pools": {
                "default_limit": concurrency["pools"]["defaultLimit"],
                "granularity": concurrency["pools"]["granularity"],
            },
            "runs": {
                "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
            },
        },
        "retention": {
            "schedule": {"purge_after_days": retention["schedule"]["purgeAfterDays"]},
            "sensor": {"purge_after_days": retention["sensor"]["purgeAfterDays"]},
            "auto_materialize": {"purge_after_days": retention["autoMaterialize"]["purgeAfterDays"]},
        },
        "telemetry": {"enabled": v["telemetry"]["enabled"]},
    }


def test_the_k8s_run_launcher_values_validate_against_the_installed_dagster_k8s_schema() -> None:
    config = k8s_run_launcher_config(values())

    result = process_config(K8sRunLauncher.config_type(), config)

    assert result.success, result.errors
    processed = result.value
    assert processed["env_secrets"] == ["fitonfhir-secrets"]
    assert processed["env_config_maps"] == ["fitonfhir-config"]
    assert processed["postgres_password_secret"] == "fitonfhir-dagster-postgresql"
    assert processed["run_k8s_config"]["job_spec_config"]["backoffLimit"] == 0
    assert processed["fail_pod_on_run_failure"] is True


def test_the_k8s_schema_check_is_real_it_refuses_a_misspelt_key() -> None:
    config = k8s_run_launcher_config(values())
    config["env_secret"] = config.pop("env_secrets")

    assert not process_config(K8sRunLauncher.config_type(), config).success


def test_the_helm_instance_settings_validate_against_the_instance_schema_and_match_dagster_yaml(
    tmp_path,
) -> None:
    from_values = instance_config_from_values(values())
    config, _ = dagster_instance_config(str(dagster_home(tmp_path, from_values)))
    shipped = load(DEPLOY / "dagster.yaml")

    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    for section in ("concurrency", "run_retries", "retention", "telemetry", "sensors", "schedules"):
        assert from_values[section] == shipped[section], section
    for key in (
        "enabled",
        "start_timeout_seconds",
        "cancel_timeout_seconds",
        "poll_interval_seconds",
        "free_slots_after_run_end_seconds",
    ):
        assert from_values["run_monitoring"][key] == shipped["run_monitoring"][key], key
    # the one intended difference: a K8s run pod that died can be resumed, a DefaultRunLauncher run cannot
    assert (
        from_values["run_monitoring"]["max_resume_run_attempts"],
        shipped["run_monitoring"]["max_resume_run_attempts"],
    ) == (3, 0)


def test_the_helm_values_use_external_postgres_and_no_chart_generated_password() -> None:
    v = values()
    assert v["postgresql"]["enabled"] is False
    assert v["postgresql"]["postgresqlHost"]
    assert "postgresqlPassword" not in v["postgresql"]
    assert v["generatePostgresqlPasswordSecret"] is False
    assert v["runLauncher"]["type"] == "K8sRunLauncher"


def test_the_user_deployment_serves_this_code_location_from_the_dockerfile_image() -> None:
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    pyproject = load_toml(ROOT / "pyproject.toml")["tool"]["dagster"]
    assert args[args.index("--module-name") + 1] == pyproject["module_name"]
    assert args[args.index("--location-name") + 1] == pyproject["code_location_name"]
    cmd = docker_cmd()
    assert deployment["port"] == int(cmd[cmd.index("--port") + 1])
    assert names(deployment["envSecrets"]) == ["fitonfhir-secrets"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert "FITONFHIR_" not in yaml.safe_dump(
        deployment.get("env", {})
    )  # no inline settings, let alone secrets


def load_toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


# -- the onboarding manifest ------------------------------------------------------------------------


def test_the_onboarding_manifest_is_a_deployment_and_a_service_wired_to_the_secrets() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "helm" / "onboarding.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"]
    deployment, service = docs
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fitonfhir", "onboarding", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    assert container["image"] == "{repository}:{tag}".format(
        **values()["dagster-user-deployments"]["deployments"][0]["image"]
    )
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(secret_refs) == {
        "FITONFHIR_STATE_SECRET",
        "FITONFHIR_GOOGLE_CLIENT_SECRET",
        "FITONFHIR_POSTGRES_URL",
    }
    assert all(ref == {"name": "fitonfhir-secrets", "key": name} for name, ref in secret_refs.items())
    assert [e["name"] for e in container["env"] if "value" in e] == ["FITONFHIR_HOME"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]


def test_the_onboarding_command_of_the_manifest_exists_with_those_options() -> None:
    from fitonfhir_dagster.cli import main

    result = CliRunner().invoke(main, ["onboarding", "serve", "--help"])

    assert result.exit_code == 0, result.output
    assert "--host" in result.output and "--port" in result.output
