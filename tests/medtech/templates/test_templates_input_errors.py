"""Bad input stops generation with exit code 2 and a message naming the file and what is wrong."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fitonfhir_dagster.cli import main
from fitonfhir_dagster.fitmapping.template_generation import TemplateGenerationError, generate_templates

WEIGHT = {
    "dataStreamId": "raw:com.google.weight:com.google.android.apps.fitness:user_input",
    "dataStreamName": "user_input",
    "type": "raw",
    "dataType": {"name": "com.google.weight", "field": [{"name": "weight", "format": "floatPoint"}]},
    "application": {"packageName": "com.google.android.apps.fitness"},
}


def _with(**changes):
    return {**WEIGHT, **changes}


def _without(key):
    return {k: v for k, v in WEIGHT.items() if k != key}


def _weight_field(**field):
    return _with(dataType={"name": "com.google.weight", "field": [field]})


# (name, JSON document, include regexes, expected text in the message)
BAD_DOCUMENTS = [
    ("object-without-dataSource", {"sources": []}, (), "has no 'dataSource' property"),
    ("dataSource-not-array", {"dataSource": {"a": 1}}, (), "'dataSource' must be an array"),
    ("scalar-document", 42, (), "expected a Google dataSources list response"),
    ("no-sources", {"dataSource": []}, (), "contains no data sources"),
    ("entry-not-object", [WEIGHT, "raw:x"], (), "dataSource[1] is not a JSON object"),
    (
        "missing-stream-id",
        [_without("dataStreamId")],
        (),
        "dataSource[0] is missing required field 'dataStreamId'",
    ),
    ("missing-data-type", [_without("dataType")], (), "is missing required field 'dataType'"),
    (
        "missing-fields",
        [_with(dataType={"name": "com.google.weight"})],
        (),
        "is missing required field 'dataType.field'",
    ),
    (
        "field-without-name",
        [_weight_field(format="floatPoint")],
        (),
        "dataType.field[0] is missing required field 'name'",
    ),
    (
        "field-without-format",
        [_weight_field(name="weight")],
        (),
        "('weight') is missing required field 'format'",
    ),
    (
        "unknown-format",
        [_weight_field(name="weight", format="double")],
        (),
        "('weight') has unknown format 'double'; expected one of floatPoint, integer, string, map",
    ),
    (
        "non-boolean-optional",
        [_weight_field(name="weight", format="floatPoint", optional="no")],
        (),
        "non-boolean 'optional'",
    ),
    ("non-string-model", [_with(device={"model": 5})], (), "field 'device.model' must be a string"),
    (
        "no-type-name-components",
        [{"dataStreamId": "x", "dataType": {"field": []}}],
        (),
        "dataSource[0] ('x') has no type-name components",
    ),
    ("blank-data-type-name", [_with(dataType={"name": " ", "field": []})], (), "has a blank 'dataType.name'"),
    (
        "conflicting-duplicate",
        [WEIGHT, _weight_field(name="weight", format="integer")],
        (),
        "conflicting device templates for type name 'raw:com.google.weight:com.google.android.apps.fitness:user_input'",
    ),
    ("invalid-include-regex", [WEIGHT], ("(unclosed",), "invalid include regex '(unclosed'"),
    ("include-matches-nothing", [WEIGHT], ("heart_rate",), "no data source matched the include regexes"),
]


@pytest.mark.parametrize(
    ("document", "include", "expected"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_bad_input_is_rejected_with_a_clear_message(tmp_path, document, include, expected):
    with pytest.raises(TemplateGenerationError) as raised:
        generate_templates(document, "standard", include)
    assert expected in str(raised.value)

    path = tmp_path / "sources.json"
    path.write_text(json.dumps(document), "utf-8")
    args = ["templates", "generate", "--data-sources", str(path), "--out", str(tmp_path / "out")]
    for pattern in include:
        args += ["--include", pattern]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2, result.output
    assert f"Error: data sources file '{path}': " in result.output
    assert expected in result.output
    assert not (tmp_path / "out").exists()


def test_conflict_message_names_both_sources():
    with pytest.raises(
        TemplateGenerationError, match=r"dataSource\[0\] \('raw:com.google.weight.*dataSource\[1\]"
    ):
        generate_templates([WEIGHT, _weight_field(name="weight", format="integer")])


def test_identical_duplicates_are_not_an_error():
    device, fhir = generate_templates([WEIGHT, WEIGHT])

    assert len(device["template"]) == len(fhir["template"]) == 1


def test_unknown_style_is_rejected():
    with pytest.raises(TemplateGenerationError, match="unknown template style 'fancy'"):
        generate_templates([WEIGHT], "fancy")


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.json"

    result = CliRunner().invoke(
        main, ["templates", "generate", "--data-sources", str(missing), "--out", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert f"cannot read data sources file '{missing}': No such file or directory" in result.output


def test_unreadable_file_is_named(tmp_path):
    binary = tmp_path / "sources.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")

    result = CliRunner().invoke(
        main, ["templates", "generate", "--data-sources", str(binary), "--out", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert f"cannot read data sources file '{binary}'" in result.output


def test_invalid_json_is_named_with_its_position(tmp_path):
    broken = tmp_path / "sources.json"
    broken.write_text('{"dataSource": [\n  {"dataStreamId": }\n]}', "utf-8")

    result = CliRunner().invoke(
        main, ["templates", "generate", "--data-sources", str(broken), "--out", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert (
        f"data sources file '{broken}' is not valid JSON: Expecting value at line 2 column 20"
        in result.output
    )


def test_out_path_that_is_a_file_is_rejected(tmp_path):
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps([WEIGHT]), "utf-8")
    occupied = tmp_path / "occupied"
    occupied.write_text("", "utf-8")

    result = CliRunner().invoke(
        main, ["templates", "generate", "--data-sources", str(sources), "--out", str(occupied)]
    )

    assert result.exit_code == 2
    assert "occupied" in result.output
    assert "is a file" in result.output
