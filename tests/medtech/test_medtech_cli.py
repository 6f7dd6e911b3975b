"""``fitonfhir medtech convert``: NDJSON Observations on stdout, dead letters on stderr, exit 0/1/2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.medtech.medtech_fitdata import FIXTURES, SUB, heart_rate_message

FITONFHIR = Path(sys.executable).with_name("fitonfhir")
DEVICE = FIXTURES / "devicecontent.json"
FHIR = FIXTURES / "fhirmapping.json"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(FITONFHIR), "medtech", "convert", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def ndjson(path: Path, *messages: dict | str) -> Path:
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_all_converted_prints_observations_with_create_mode_ids_and_exits_0(tmp_path):
    messages = ndjson(tmp_path / "m.ndjson", heart_rate_message([70.0, 71.0]))
    done = run("--device-mapping", DEVICE, "--fhir-mapping", FHIR, "--with-identities", messages)
    assert done.returncode == 0, done.stderr
    resources = [json.loads(line) for line in done.stdout.splitlines()]
    patient = hashlib.sha256(f"_{SUB}".encode()).hexdigest()
    device = hashlib.sha256(f"_{SUB}.com.google.android.gms".encode()).hexdigest()
    assert [r["resourceType"] for r in resources] == ["Patient", "Device", "Observation", "Observation"]
    assert resources[0] == {"resourceType": "Patient", "id": patient, "identifier": [{"value": SUB}]}
    assert resources[1]["id"] == device and resources[1]["patient"] == {"reference": f"Patient/{patient}"}
    assert all(r["subject"] == {"reference": f"Patient/{patient}"} for r in resources[2:])
    assert "2 Observation(s), 0 dead letter(s)" in done.stderr


def test_some_dead_lettered_exits_1_and_names_line_and_reason(tmp_path):
    bad = heart_rate_message([70.0])
    bad["point"][0]["value"][0]["fpVal"] = None
    messages = ndjson(tmp_path / "m.ndjson", heart_rate_message([72.0]), "", bad)
    done = run("--device-mapping", DEVICE, "--fhir-mapping", FHIR, messages)
    assert done.returncode == 1
    assert len(done.stdout.splitlines()) == 1
    assert "line 3: IncompatibleDataException: Unable to extract required value for [bpm]" in done.stderr


def test_bad_template_exits_2_naming_file_template_and_line(tmp_path):
    broken = json.loads(DEVICE.read_text())
    broken["template"][2]["template"]["typeMatchExpression"] = "$..[?(@dataTypeName == 'x'"
    device = tmp_path / "devicecontent.json"
    device.write_text(json.dumps(broken, indent=2))
    line = [
        n for n, text in enumerate(device.read_text().splitlines(), 1) if text.strip() == '"template": {'
    ][2]
    messages = ndjson(tmp_path / "m.ndjson", heart_rate_message([72.0]))
    done = run("--device-mapping", device, "--fhir-mapping", FHIR, messages)
    assert done.returncode == 2
    assert f"{device}: template 2" in done.stderr and f"(line {line})" in done.stderr
    assert "invalid JSONPath" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("content", ['{"point": [}\n', "not json\n"])
def test_bad_input_line_exits_2_naming_file_and_line(tmp_path, content):
    messages = tmp_path / "m.ndjson"
    messages.write_text(json.dumps(heart_rate_message([72.0])) + "\n" + content)
    done = run("--device-mapping", DEVICE, "--fhir-mapping", FHIR, messages)
    assert done.returncode == 2
    assert f"{messages}: line 2: not valid JSON" in done.stderr


def test_missing_mapping_file_exits_2(tmp_path):
    messages = ndjson(tmp_path / "m.ndjson", heart_rate_message([72.0]))
    done = run("--device-mapping", tmp_path / "nope.json", "--fhir-mapping", FHIR, messages)
    assert done.returncode == 2 and "nope.json" in done.stderr
