"""``fitonfhir templates generate``: writes both files, reports what it wrote, works as a real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fitonfhir_dagster.cli import main
from fitonfhir_dagster.fitmapping.template_generation import generate_templates

FITONFHIR = Path(sys.executable).with_name("fitonfhir")


def _read(path: Path):
    return json.loads(path.read_text("utf-8"))


def test_generate_writes_standard_templates_into_a_new_directory(tmp_path, fixture_dir, sample_sources):
    out = tmp_path / "nested" / "templates"

    result = CliRunner().invoke(
        main,
        ["templates", "generate", "--data-sources", str(fixture_dir / "dataSources.json"), "--out", str(out)],
    )

    assert result.exit_code == 0, result.output
    device, fhir = generate_templates(sample_sources, "standard")
    assert _read(out / "devicecontent.json") == device
    assert _read(out / "fhirmapping.json") == fhir
    assert result.output.strip() == (
        f"Wrote 34 device templates to {out / 'devicecontent.json'} "
        f"and 34 FHIR templates to {out / 'fhirmapping.json'} (style: standard)."
    )
    assert sorted(p.name for p in out.iterdir()) == ["devicecontent.json", "fhirmapping.json"]


def test_generate_overwrites_previous_templates(tmp_path, fixture_dir):
    (tmp_path / "devicecontent.json").write_text("stale", "utf-8")
    args = [
        "templates",
        "generate",
        "--data-sources",
        str(fixture_dir / "dataSources.json"),
        "--out",
        str(tmp_path),
    ]

    result = CliRunner().invoke(main, [*args, "--style", "original"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "devicecontent.json").read_text("utf-8") == (
        fixture_dir / "devicecontent.json"
    ).read_text("utf-8")


def test_include_accepts_repeated_and_comma_separated_regexes(tmp_path, fixture_dir):
    result = CliRunner().invoke(
        main,
        [
            "templates",
            "generate",
            "--data-sources",
            str(fixture_dir / "dataSources.json"),
            "--out",
            str(tmp_path),
            "--include",
            r"WEIGHT, body\.fat",
            "--include",
            "raw:com.google.height",
        ],
    )

    assert result.exit_code == 0, result.output
    names = [
        t["template"]["typeName"].split(":")[1] for t in _read(tmp_path / "fhirmapping.json")["template"]
    ]
    assert sorted(set(names)) == ["com.google.body.fat.percentage", "com.google.height", "com.google.weight"]
    assert len(names) == 7
    assert "Wrote 7 device templates" in result.output


def test_unknown_style_is_a_usage_error(tmp_path, fixture_dir):
    result = CliRunner().invoke(
        main,
        [
            "templates",
            "generate",
            "--data-sources",
            str(fixture_dir / "dataSources.json"),
            "--out",
            str(tmp_path),
        ]
        + ["--style", "fancy"],
    )

    assert result.exit_code == 2
    assert "'fancy' is not one of 'standard', 'original'" in result.output


def test_installed_command_reproduces_the_original_files(tmp_path, fixture_dir):
    completed = subprocess.run(
        [str(FITONFHIR), "templates", "generate", "--data-sources", str(fixture_dir / "dataSources.json")]
        + ["--out", str(tmp_path / "out"), "--style", "original"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert "Wrote 34 device templates" in completed.stdout
    for name in ("devicecontent.json", "fhirmapping.json"):
        assert (tmp_path / "out" / name).read_bytes() == (fixture_dir / name).read_bytes()


def test_installed_command_fails_with_exit_code_2_and_the_reason(tmp_path):
    bad = tmp_path / "sources.json"
    bad.write_text(
        '[{"dataStreamId": "x", "dataType": {"field": [{"name": "v", "format": "double"}]}}]', "utf-8"
    )

    completed = subprocess.run(
        [str(FITONFHIR), "templates", "generate", "--data-sources", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 2
    assert "dataSource[0] ('x') dataType.field[0] ('v') has unknown format 'double'" in completed.stderr
    assert "Traceback" not in completed.stderr
