"""Style ``standard`` (the default): the original's device side, Observations coded with LOINC and UCUM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.fitmapping.template_generation.coding import coding_table
from fitonfhir_dagster.medtech.jsonpath import compile_jsonpath

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GOOGLE_FIT = "https://fitonfhir.dev/fhir/CodeSystem/google-fit"
GOOGLE_TYPE = "https://fitonfhir.dev/fhir/CodeSystem/google-fit-data-type"

# data type -> (observation codes, category, (value name, UCUM code) or None)
EXPECTED_OBSERVATIONS = {
    "com.google.heart_rate.bpm": ([(LOINC, "8867-4")], "vital-signs", ("bpm", "/min")),
    "com.google.step_count.delta": ([(LOINC, "55423-8")], "activity", ("steps", "{steps}")),
    "com.google.weight": ([(LOINC, "29463-7")], "vital-signs", ("weight", "kg")),
    "com.google.height": ([(LOINC, "8302-2")], "vital-signs", ("height", "m")),
    "com.google.body.temperature": ([(LOINC, "8310-5")], "vital-signs", ("body_temperature", "Cel")),
    "com.google.oxygen_saturation": (
        [(LOINC, "2708-6"), (LOINC, "59408-5")],
        "vital-signs",
        ("oxygen_saturation", "%"),
    ),
    "com.google.blood_pressure": ([(LOINC, "85354-9")], "vital-signs", None),
    "com.google.blood_glucose": ([(LOINC, "15074-8")], "laboratory", ("blood_glucose_level", "mmol/L")),
    "com.google.body.fat.percentage": ([(LOINC, "41982-0")], None, ("percentage", "%")),
    "com.google.heart_minutes": (
        [(GOOGLE_FIT, "heart_minutes")],
        "activity",
        ("intensity", "{heart_points}"),
    ),
}

# data type -> {component value name: (codes, UCUM code or None for String values)}
EXPECTED_COMPONENTS = {
    "com.google.blood_pressure": {
        "blood_pressure_systolic": ([(LOINC, "8480-6")], "mm[Hg]"),
        "blood_pressure_diastolic": ([(LOINC, "8462-4")], "mm[Hg]"),
        "body_position": ([(GOOGLE_FIT, "body_position")], None),
        "blood_pressure_measurement_location": ([(GOOGLE_FIT, "blood_pressure_measurement_location")], None),
    },
    "com.google.oxygen_saturation": {
        "supplemental_oxygen_flow_rate": ([(LOINC, "3151-8")], "L/min"),
        "oxygen_therapy_administration_mode": ([(GOOGLE_FIT, "oxygen_therapy_administration_mode")], None),
        "oxygen_saturation_system": ([(GOOGLE_FIT, "oxygen_saturation_system")], None),
        "oxygen_saturation_measurement_method": (
            [(GOOGLE_FIT, "oxygen_saturation_measurement_method")],
            None,
        ),
    },
    "com.google.blood_glucose": {
        "temporal_relation_to_meal": ([(GOOGLE_FIT, "temporal_relation_to_meal")], None),
        "meal_type": ([(GOOGLE_FIT, "meal_type")], None),
        "temporal_relation_to_sleep": ([(GOOGLE_FIT, "temporal_relation_to_sleep")], None),
        "blood_glucose_specimen_source": ([(GOOGLE_FIT, "blood_glucose_specimen_source")], None),
    },
    "com.google.body.temperature": {
        "body_temperature_measurement_location": (
            [(GOOGLE_FIT, "body_temperature_measurement_location")],
            None,
        ),
    },
}


def _codes(codes):
    return [(c["system"], c["code"]) for c in codes]


def _fhir_by_type_name(fhir):
    return {t["template"]["typeName"]: t["template"] for t in fhir["template"]}


def test_default_style_is_standard(sample_sources):
    assert generate_templates(sample_sources) == generate_templates(sample_sources, "standard")


@pytest.mark.parametrize("data_type", sorted(EXPECTED_OBSERVATIONS))
def test_every_stream_of_a_type_gets_its_loinc_code_unit_and_category(sample_sources, data_type):
    codes, category, value = EXPECTED_OBSERVATIONS[data_type]
    _, fhir = generate_templates(sample_sources)
    templates = [t for name, t in _fhir_by_type_name(fhir).items() if name.split(":")[1] == data_type]

    assert templates, data_type
    for template in templates:
        # Standard codes first, then the original's Google type name as a coding with a system.
        assert _codes(template["codes"])[: len(codes)] == codes
        assert (GOOGLE_TYPE, data_type) in _codes(template["codes"])
        assert all(c.get("display") for c in template["codes"] if c["system"] == LOINC)
        if category is None:
            assert "category" not in template
        else:
            assert [_codes(c["codes"]) for c in template["category"]] == [[(CATEGORY, category)]]
        if value is None:
            assert "value" not in template
        else:
            assert template["value"] == {
                "valueName": value[0],
                "valueType": "Quantity",
                "unit": template["value"]["unit"],
                "system": UCUM,
                "code": value[1],
            }
        assert template["periodInterval"] == 0


@pytest.mark.parametrize("data_type", sorted(EXPECTED_COMPONENTS))
def test_components_carry_loinc_or_project_codes_and_keep_the_original_code(sample_sources, data_type):
    _, fhir = generate_templates(sample_sources, include=[f"^derived:{data_type}:com.google.android.gms:"])
    template = fhir["template"][0]["template"]
    components = {c["value"]["valueName"]: c for c in template["components"]}

    assert set(components) == set(EXPECTED_COMPONENTS[data_type])
    for name, (codes, unit_code) in EXPECTED_COMPONENTS[data_type].items():
        component = components[name]
        assert _codes(component["codes"]) == [*codes, (GOOGLE_TYPE, f"{data_type}.{name}")]
        if unit_code is None:
            assert component["value"] == {"valueName": name, "valueType": "String"}
        else:
            assert component["value"]["valueType"] == "Quantity"
            assert (component["value"]["system"], component["value"]["code"]) == (UCUM, unit_code)


def test_blood_pressure_is_the_85354_9_panel_with_systolic_and_diastolic_in_mm_hg(sample_sources):
    _, fhir = generate_templates(sample_sources, include=["raw:com.google.blood_pressure"])
    template = fhir["template"][0]["template"]

    assert template["codes"][0] == {
        "code": "85354-9",
        "system": LOINC,
        "display": "Blood pressure panel with all children optional",
    }
    systolic, diastolic = template["components"][:2]
    assert systolic["codes"][0] == {"code": "8480-6", "system": LOINC, "display": "Systolic blood pressure"}
    assert diastolic["codes"][0] == {"code": "8462-4", "system": LOINC, "display": "Diastolic blood pressure"}
    assert systolic["value"] == {
        "valueName": "blood_pressure_systolic",
        "valueType": "Quantity",
        "unit": "mmHg",
        "system": UCUM,
        "code": "mm[Hg]",
    }


def test_resting_heart_rate_stream_is_also_coded_as_resting(sample_sources):
    _, fhir = generate_templates(sample_sources, include=["heart_rate.bpm:com.google.android.gms"])
    by_stream = {name.split(":")[-1]: t for name, t in _fhir_by_type_name(fhir).items()}

    assert (LOINC, "40443-4") in _codes(by_stream["resting_heart_rate<-merge_heart_rate_bpm"]["codes"])
    assert (LOINC, "40443-4") not in _codes(by_stream["merge_heart_rate_bpm"]["codes"])


def test_device_side_keeps_the_original_values_names_and_order(sample_sources):
    original_device, original_fhir = generate_templates(sample_sources, "original")
    device, fhir = generate_templates(sample_sources, "standard")

    for ours, theirs in zip(device["template"], original_device["template"], strict=True):
        ours_body = {k: v for k, v in ours["template"].items() if k != "typeMatchExpression"}
        theirs_body = {k: v for k, v in theirs["template"].items() if k != "typeMatchExpression"}
        assert ours_body == theirs_body
    assert [t["template"]["typeName"] for t in fhir["template"]] == [
        t["template"]["typeName"] for t in original_fhir["template"]
    ]


def _message(stream_id: str, data_type: str) -> dict:
    """A MedTech-wrapped device message with one point, shaped like fit-on-fhir's events."""
    point = {"dataTypeName": data_type, "endTimeNanos": 1700000000123456789, "value": [{"fpVal": 1.0}]}
    return {
        "Body": {
            "dataSourceId": stream_id,
            "point": [point],
            "patientIdentifier": "p",
            "deviceIdentifier": "d",
        }
    }


def _matching_type_names(device, stream_id: str, data_type: str) -> list[str]:
    message = _message(stream_id, data_type)
    return [
        t["template"]["typeName"]
        for t in device["template"]
        if compile_jsonpath(t["template"]["typeMatchExpression"]).select(message)
    ]


def test_each_sample_stream_matches_exactly_its_own_template(sample_sources, fixture_dir):
    device, _ = generate_templates(sample_sources)
    # The deployed mapping lists one template per sample source, in the same order.
    deployed = json.loads((fixture_dir / "devicecontent.json").read_text("utf-8"))["template"]

    for source, own in zip(sample_sources["dataSource"], deployed, strict=True):
        matches = _matching_type_names(device, source["dataStreamId"], source["dataType"]["name"])
        assert matches == [own["template"]["typeName"]], source["dataStreamId"]


def test_original_matching_imports_resting_heart_rate_twice_standard_does_not(sample_sources):
    resting = (
        "derived:com.google.heart_rate.bpm:com.google.android.gms:resting_heart_rate<-merge_heart_rate_bpm"
    )
    original_device, _ = generate_templates(sample_sources, "original")
    device, _ = generate_templates(sample_sources)

    assert len(_matching_type_names(original_device, resting, "com.google.heart_rate.bpm")) == 2
    assert _matching_type_names(device, resting, "com.google.heart_rate.bpm") == [
        "derived:com.google.heart_rate.bpm:com.google.android.gms:resting_heart_rate<-merge_heart_rate_bpm"
    ]


def test_other_users_devices_of_the_same_model_match_but_look_alike_streams_do_not(sample_sources):
    device, _ = generate_templates(sample_sources)
    watch = "raw:com.google.heart_rate.bpm:com.google.android.gms:appleinc.:watch:{uid}:from_device"

    assert _matching_type_names(device, watch.format(uid="a1b2c3d4"), "com.google.heart_rate.bpm") == [
        "raw:com.google.heart_rate.bpm:com.google.android.gms:appleinc.:watch:from_device"
    ]
    # Dots are literal and the id is anchored: near-misses the original's regexes accepted are rejected.
    assert (
        _matching_type_names(
            device, watch.format(uid="x").replace("appleinc.", "appleincX"), "com.google.heart_rate.bpm"
        )
        == []
    )
    extra_segment = watch.format(uid="a1:b2")
    assert _matching_type_names(device, extra_segment, "com.google.heart_rate.bpm") == []
    merged_v2 = "derived:com.google.weight:com.google.android.gms:merge_weight_v2"
    assert _matching_type_names(device, merged_v2, "com.google.weight") == []


def test_several_sources_of_one_type_name_share_one_alternation():
    base = {
        "type": "raw",
        "dataStreamName": "user_input",
        "dataType": {"name": "com.google.weight", "field": [{"name": "weight", "format": "floatPoint"}]},
    }
    # A REST-created source: the developer project number sits in the stream id, not in the type name.
    app = {
        **base,
        "dataStreamId": "raw:com.google.weight:com.example.scale:user_input",
        "application": {"packageName": "com.example.scale"},
    }
    rest = {
        **base,
        "dataStreamId": "raw:com.google.weight:com.example.scale:407408718192:user_input",
        "application": {"packageName": "com.example.scale"},
    }

    device, fhir = generate_templates([app, rest])

    assert len(device["template"]) == len(fhir["template"]) == 1
    for stream_id in (app["dataStreamId"], rest["dataStreamId"]):
        assert _matching_type_names(device, stream_id, "com.google.weight") == [
            "raw:com.google.weight:com.example.scale:user_input"
        ]


def test_unknown_data_types_keep_the_google_code_without_units():
    source = {
        "dataStreamId": "derived:com.google.active_minutes:com.google.android.gms:merge_active_minutes",
        "dataStreamName": "merge_active_minutes",
        "type": "derived",
        "dataType": {
            "name": "com.google.active_minutes",
            "field": [{"name": "duration", "format": "integer"}],
        },
        "application": {"packageName": "com.google.android.gms"},
    }

    _, fhir = generate_templates([source])

    template = fhir["template"][0]["template"]
    assert template["codes"] == [{"code": "com.google.active_minutes", "system": GOOGLE_TYPE}]
    assert template["value"] == {"valueName": "duration", "valueType": "Quantity"}
    assert "category" not in template


def test_coding_table_documents_every_type():
    table = coding_table()

    for data_type in EXPECTED_OBSERVATIONS:
        assert f"`{data_type}`" in table


def test_readme_table_is_current():
    readme = (Path(__file__).parents[3] / "README.md").read_text("utf-8")

    assert coding_table() in readme
