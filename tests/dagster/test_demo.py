"""`fitonfhir demo` (what `make demo` runs): real processes, a real Dagster instance, a JSON last line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

FITONFHIR = Path(sys.executable).with_name("fitonfhir")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _demo(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FITONFHIR_", "DAGSTER_"))}
    env |= {
        "FITONFHIR_HOME": str(tmp_path / "home"),
        "FITONFHIR_SANDBOX_URL": f"http://127.0.0.1:{_free_port()}",
    }
    done = subprocess.run(
        [str(FITONFHIR), "demo", *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_demo_imports_every_data_type_and_a_second_run_duplicates_nothing(tmp_path):
    first, text = _demo(tmp_path, "--users", "1", "--days", "7")
    assert first["users"] == 1 and first["days"] == 7
    assert len(first["points_by_type"]) == 10 and all(n > 0 for n in first["points_by_type"].values())
    assert first["device_messages"] > 0
    assert first["observations_written"] == first["observations_total"] > 0
    assert "onboarded demo-user-1@example.com" in text

    second, _ = _demo(tmp_path, "--users", "1", "--days", "7")
    assert second["points"] == first["points"]
    assert second["observations_written"] == 0
    assert second["observations_total"] == first["observations_total"]
    archive = tmp_path / "home" / "archive" / "device_messages"
    assert len(list(archive.rglob("*.ndjson"))) == 7
    assert (tmp_path / "home" / "dagster" / "dagster.yaml").exists()
