"""Style ``original`` is microsoft/fit-on-fhir's mapping generator, reproduced rule for rule."""

from __future__ import annotations

import json

import jmespath
import pytest

from fitonfhir_dagster.fitmapping.template_generation import (
    TemplateGenerationError,
    generate_templates,
    render_json,
)

TIMESTAMP = {
    "value": "fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `0.000001`)))",
    "language": "JmesPath",
}

# The original's Mapping.Tests/TestInput/DataSource.json, as described in its test suite.
ACTIVE_MINUTES_IPHONE = {
    "dataStreamId": "derived:com.google.active_minutes:com.google.ios.fit:appleinc.:iphone:12345:top_level",
    "dataStreamName": "top_level",
    "type": "derived",
    "dataType": {"name": "com.google.active_minutes", "field": [{"name": "duration", "format": "integer"}]},
    "device": {"uid": "12345", "type": "phone", "model": "iphone", "manufacturer": "appleinc."},
    "application": {"packageName": "com.google.ios.fit"},
    "dataQualityStandard": [],
}
ACTIVE_MINUTES_WATCH = {
    **ACTIVE_MINUTES_IPHONE,
    "dataStreamId": "derived:com.google.active_minutes:com.google.ios.fit:appleinc.:watch:3569e4dd:top_level",
    "device": {"uid": "3569e4dd", "type": "watch", "model": "watch", "manufacturer": "appleinc."},
}
ACTIVITY_SEGMENT = {
    "dataStreamId": "derived:com.google.activity.segment:com.google.android.gms:merge_activity_segments",
    "dataStreamName": "merge_activity_segments",
    "type": "derived",
    "dataType": {"name": "com.google.activity.segment", "field": [{"name": "activity", "format": "integer"}]},
    "application": {"packageName": "com.google.android.gms"},
    "dataQualityStandard": [],
}


def test_sample_data_sources_give_exactly_the_deployed_templates(sample_sources, fixture_dir):
    device, fhir = generate_templates(sample_sources, "original")

    assert device == json.loads((fixture_dir / "devicecontent.json").read_text("utf-8"))
    assert fhir == json.loads((fixture_dir / "fhirmapping.json").read_text("utf-8"))
    assert len(device["template"]) == len(fhir["template"]) == 34


def test_sample_output_is_byte_identical_to_the_original_files(sample_sources, fixture_dir):
    device, fhir = generate_templates(sample_sources, "original")

    assert render_json(device) == (fixture_dir / "devicecontent.json").read_text("utf-8")
    assert render_json(fhir) == (fixture_dir / "fhirmapping.json").read_text("utf-8")


def test_a_bare_array_works_like_the_list_response(sample_sources):
    assert generate_templates(sample_sources["dataSource"], "original") == generate_templates(
        sample_sources, "original"
    )


def test_single_active_minutes_source_gives_one_template_pair():
    device, fhir = generate_templates([ACTIVE_MINUTES_IPHONE], "original")

    type_name = "derived:com.google.active_minutes:com.google.ios.fit:appleinc.:iphone:top_level"
    assert device == {
        "templateType": "CollectionContent",
        "template": [
            {
                "templateType": "CalculatedContent",
                "template": {
                    "typeMatchExpression": "$..[?(@dataTypeName == 'com.google.active_minutes'"
                    " && $.Body.dataSourceId =~ /derived/ && $.Body.dataSourceId =~ /com.google.ios.fit/"
                    " && $.Body.dataSourceId =~ /appleinc./ && $.Body.dataSourceId =~ /iphone/"
                    " && $.Body.dataSourceId =~ /top_level/)]",
                    "deviceIdExpression": "$.Body.deviceIdentifier",
                    "patientIdExpression": "$.Body.patientIdentifier",
                    "timestampExpression": TIMESTAMP,
                    "values": [
                        {
                            "valueName": "duration",
                            "valueExpression": "matchedToken.value[0].intVal",
                            "required": True,
                        }
                    ],
                    "typeName": type_name,
                },
            }
        ],
    }
    assert fhir == {
        "templateType": "CollectionFhir",
        "template": [
            {
                "templateType": "CodeValueFhir",
                "template": {
                    "codes": [{"code": "com.google.active_minutes"}],
                    "value": {"valueName": "duration", "valueType": "Quantity"},
                    "typeName": type_name,
                },
            }
        ],
    }


def test_unfiltered_collection_has_both_sources_in_input_order():
    device, _ = generate_templates([ACTIVE_MINUTES_WATCH, ACTIVITY_SEGMENT], "original")

    assert [t["template"]["typeName"] for t in device["template"]] == [
        "derived:com.google.active_minutes:com.google.ios.fit:appleinc.:watch:top_level",
        "derived:com.google.activity.segment:com.google.android.gms:merge_activity_segments",
    ]


def test_include_regex_keeps_only_matching_streams():
    device, fhir = generate_templates(
        [ACTIVE_MINUTES_WATCH, ACTIVITY_SEGMENT], "original", include=[r"com\.google\.activity\.segment"]
    )

    assert [t["template"]["typeName"] for t in device["template"]] == [
        "derived:com.google.activity.segment:com.google.android.gms:merge_activity_segments"
    ]
    assert len(fhir["template"]) == 1


def test_include_regex_is_case_insensitive_unanchored_and_any_of():
    sources = [ACTIVE_MINUTES_WATCH, ACTIVITY_SEGMENT]

    assert len(generate_templates(sources, "original", include=["ACTIVITY"])[0]["template"]) == 1
    assert len(generate_templates(sources, "original", include=["watch", "segment"])[0]["template"]) == 2


def test_device_uid_is_not_part_of_the_type_name_and_identical_templates_collapse():
    other_iphone = {
        **ACTIVE_MINUTES_IPHONE,
        "dataStreamId": ACTIVE_MINUTES_IPHONE["dataStreamId"].replace("12345", "99999"),
        "device": {**ACTIVE_MINUTES_IPHONE["device"], "uid": "99999"},
    }

    device, fhir = generate_templates([ACTIVE_MINUTES_IPHONE, other_iphone], "original")

    assert len(device["template"]) == len(fhir["template"]) == 1


def test_same_type_name_with_different_fields_is_an_error_naming_both_sources():
    changed = {
        **ACTIVE_MINUTES_IPHONE,
        "dataType": {
            "name": "com.google.active_minutes",
            "field": [{"name": "duration", "format": "floatPoint"}],
        },
    }

    with pytest.raises(TemplateGenerationError, match=r"dataSource\[0\].*dataSource\[1\]"):
        generate_templates([ACTIVE_MINUTES_IPHONE, changed], "original")


def test_optional_fields_omit_required_and_enum_fields_become_string_lookups(sample_sources):
    device, fhir = generate_templates(sample_sources, "original", include=["raw:com.google.blood_pressure"])

    values = device["template"][0]["template"]["values"]
    assert [v.get("required") for v in values] == [True, True, None, None]
    assert values[2]["valueExpression"]["language"] == "JmesPath"
    components = fhir["template"][0]["template"]["components"]
    assert [c["value"]["valueType"] for c in components] == ["Quantity", "Quantity", "String", "String"]
    assert "value" not in fhir["template"][0]["template"]


@pytest.mark.parametrize(
    ("int_value", "expected"),
    [
        (0, "UNSPECIFIED"),
        (2, "BODY_POSITION_SITTING"),
        (4, "BODY_POSITION_SEMI_RECUMBENT"),
        (5, None),
        (None, None),
    ],
)
def test_enum_lookup_expression_maps_integers_to_google_names(sample_sources, int_value, expected):
    device, _ = generate_templates(sample_sources, "original", include=["raw:com.google.blood_pressure"])
    expression = device["template"][0]["template"]["values"][2]["valueExpression"]["value"]
    message = {"matchedToken": {"value": [{"fpVal": 120.0}, {"fpVal": 80.0}, {"intVal": int_value}]}}

    assert jmespath.search(expression, message) == expected


def test_string_and_map_fields_read_their_own_value_property_and_are_strings():
    source = {
        **ACTIVITY_SEGMENT,
        "dataType": {
            "name": "com.example.note",
            "field": [
                {"name": "text", "format": "string"},
                {"name": "tags", "format": "map", "optional": True},
            ],
        },
    }

    device, fhir = generate_templates([source], "original")

    values = device["template"][0]["template"]["values"]
    assert [v["valueExpression"] for v in values] == [
        "matchedToken.value[0].stringVal",
        "matchedToken.value[1].mapVal",
    ]
    components = fhir["template"][0]["template"]["components"]
    assert [c["codes"] for c in components] == [
        [{"code": "com.example.note.text"}],
        [{"code": "com.example.note.tags"}],
    ]
    assert {c["value"]["valueType"] for c in components} == {"String"}


def test_a_single_include_string_is_one_regex_not_characters():
    device, _ = generate_templates([ACTIVE_MINUTES_WATCH, ACTIVITY_SEGMENT], "original", include="segment")

    assert len(device["template"]) == 1
