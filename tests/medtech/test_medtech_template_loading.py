"""Device and FHIR mapping validation: MedTech's rules, errors that name template and line."""

from __future__ import annotations

import json

import pytest

from fitonfhir_dagster.medtech.device_templates import CALCULATED, IOT, load_device_mapping
from fitonfhir_dagster.medtech.fhir_templates import HOURLY, load_fhir_mapping
from fitonfhir_dagster.medtech.medtech_errors import InvalidTemplateException
from tests.medtech.medtech_fitdata import fixture_text

GOOD = {
    "typeName": "hr",
    "typeMatchExpression": "$..[?(@heartRate)]",
    "deviceIdExpression": "$.Body.deviceId",
    "timestampExpression": "$.Body.time",
    "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": True}],
}


def device_text(*templates: dict, kind: str = "CalculatedContent") -> str:
    entries = [{"templateType": kind, "template": t} for t in templates]
    return json.dumps({"templateType": "CollectionContent", "template": entries}, indent=2)


def line_of_template(text: str, index: int) -> int:
    """Line where the index-th inner ``"template": {`` object starts (our oracle, by text search)."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines, start=1) if line.strip() == '"template": {']
    return starts[index]


def test_the_original_mappings_load_with_34_templates_each():
    device = load_device_mapping(fixture_text("devicecontent.json"))
    fhir = load_fhir_mapping(fixture_text("fhirmapping.json"))
    assert len(device.templates) == 34 and len(fhir.templates) == 34
    assert {t.kind for t in device.templates} == {CALCULATED}
    assert device.templates[0].timestamp.language == "JmesPath"
    assert device.templates[0].type_match.language == "JsonPath"


def test_kinds_and_property_names_are_case_insensitive_and_booleans_may_be_strings():
    template = {k.upper(): v for k, v in GOOD.items()}
    template["VALUES"] = [
        {"VALUENAME": "hr", "valueexpression": "$.matchedToken.heartRate", "Required": "TRUE"}
    ]
    mapping = load_device_mapping(device_text(template, kind="calculatedcontenttemplate"))
    assert mapping.templates[0].values[0].required is True


def test_unknown_property_names_the_template_index_and_its_line():
    text = device_text(GOOD, dict(GOOD, typeName="hr2", colour="red"))
    with pytest.raises(InvalidTemplateException) as info:
        load_device_mapping(text, "devicecontent.json")
    message = str(info.value)
    assert "devicecontent.json" in message and "template 1" in message and "'colour'" in message
    assert info.value.line == line_of_template(text, 1)
    assert f"line {info.value.line}" in message


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"typeName": ""}, "typeName is required"),
        ({"deviceIdExpression": None}, "deviceIdExpression is required"),
        ({"typeMatchExpression": "$..[?(@heartRate"}, "typeMatchExpression: invalid JSONPath"),
        (
            {"timestampExpression": {"value": "fromUnixTimestamp(", "language": "JmesPath"}},
            "invalid JMESPath",
        ),
        ({"timestampExpression": {"value": "nope(x)", "language": "JmesPath"}}, "unknown function"),
        ({"timestampExpression": {"value": "x", "language": "XPath"}}, "unknown language"),
        ({"values": None}, "values is required"),
        (
            {"values": [{"valueName": "hr", "valueExpression": "$.x", "required": "maybe"}]},
            "required must be",
        ),
        ({"values": [{"valueExpression": "$.x"}]}, "valueName is required"),
    ],
)
def test_invalid_templates_are_rejected_with_the_problem_template_and_line(change, problem):
    text = device_text(GOOD, {k: v for k, v in {**GOOD, **change}.items() if v is not None})
    with pytest.raises(InvalidTemplateException, match=problem) as info:
        load_device_mapping(text)
    assert "template 1" in str(info.value)
    assert info.value.line is not None and info.value.line >= line_of_template(text, 1)


def test_iot_templates_fix_device_and_time_and_refuse_those_expressions():
    iot = {k: v for k, v in GOOD.items() if k not in ("deviceIdExpression", "timestampExpression")}
    mapping = load_device_mapping(device_text(iot, kind="IotJsonPathContent"))
    assert mapping.templates[0].kind == IOT
    assert mapping.templates[0].device_id.text == "$.SystemProperties.iothub-connection-device-id"
    with pytest.raises(InvalidTemplateException, match="unknown property 'deviceIdExpression'"):
        load_device_mapping(device_text(GOOD, kind="IotJsonPathContent"))


def test_legacy_templates_take_plain_strings_only():
    legacy = dict(GOOD, timestampExpression={"value": "time", "language": "JmesPath"})
    with pytest.raises(InvalidTemplateException, match="plain JSONPath strings only"):
        load_device_mapping(device_text(legacy, kind="JsonPathContent"))


def test_unknown_template_type_root_type_and_broken_json_are_rejected():
    with pytest.raises(InvalidTemplateException, match="unknown templateType 'FancyContent'"):
        load_device_mapping(device_text(GOOD, kind="FancyContent"))
    with pytest.raises(InvalidTemplateException, match="CollectionContent"):
        load_device_mapping({"templateType": "CollectionFhir", "template": []})
    with pytest.raises(InvalidTemplateException, match="not valid JSON at line 3") as info:
        load_device_mapping('{\n "templateType": "CollectionContent",\n "template": [,]}')
    assert info.value.line == 3


FHIR_GOOD = {"typeName": "hr", "codes": [{"code": "8867-4", "system": "http://loinc.org"}]}


def fhir_text(*templates: dict) -> str:
    entries = [{"templateType": "CodeValueFhir", "template": t} for t in templates]
    return json.dumps({"templateType": "CollectionFhir", "template": entries}, indent=2)


def test_fhir_period_names_and_case_insensitive_lookup():
    sampled = dict(
        FHIR_GOOD,
        periodInterval="Hourly",
        value={"valueType": "sampleddata", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"},
    )
    mapping = load_fhir_mapping(fhir_text(sampled))
    assert mapping.find("HR") is mapping.templates[0]
    assert mapping.templates[0].period_interval == HOURLY
    assert mapping.templates[0].uses_sampled_data


@pytest.mark.parametrize(
    ("templates", "problem"),
    [
        ((FHIR_GOOD, dict(FHIR_GOOD, typeName="HR")), "duplicates template 0"),
        ((dict(FHIR_GOOD, periodInterval=30),), "periodInterval must be"),
        ((dict(FHIR_GOOD, value={"valueType": "SampledData", "valueName": "hr"}),), "defaultPeriod"),
        ((dict(FHIR_GOOD, value={"valueType": "Decimal", "valueName": "hr"}),), "valueType must be one of"),
        (({"typeName": "hr"},), "codes is required"),
        ((dict(FHIR_GOOD, extra=1),), "unknown property 'extra'"),
    ],
)
def test_invalid_fhir_templates_name_the_template_and_line(templates, problem):
    text = fhir_text(*templates)
    with pytest.raises(InvalidTemplateException, match=problem) as info:
        load_fhir_mapping(text, "fhirmapping.json")
    assert "fhirmapping.json: template" in str(info.value)
    assert info.value.line is not None
