"""Generated templates in the converter's MedTech-compatible engine: they load and match device messages."""

from __future__ import annotations

import json

import pytest

from fitonfhir_dagster.fitmapping.device_messages import build_device_messages
from fitonfhir_dagster.fitmapping.template_generation import STYLES, generate_templates, render_json
from fitonfhir_dagster.medtech.device_templates import load_device_mapping
from fitonfhir_dagster.medtech.fhir_templates import load_fhir_mapping
from fitonfhir_dagster.medtech.measurements import MeasurementExtractor, wrap_message


@pytest.mark.parametrize("style", STYLES)
def test_generated_templates_load_and_every_device_type_has_its_fhir_template(sample_sources, style):
    device, fhir = generate_templates(sample_sources, style)

    device_mapping = load_device_mapping(render_json(device), "devicecontent.json")
    fhir_mapping = load_fhir_mapping(render_json(fhir), "fhirmapping.json")

    assert len(device_mapping.templates) == len(fhir_mapping.templates) == 34
    for template in device_mapping.templates:
        assert fhir_mapping.find(template.type_name) is not None, template.type_name


def test_standard_codes_and_units_survive_loading(sample_sources):
    _, fhir = generate_templates(
        sample_sources, include=["raw:com.google.heart_rate.bpm:com.google.android.apps"]
    )

    template = load_fhir_mapping(fhir).templates[0]

    assert template.period_interval == 0
    assert [(c.system, c.code) for c in template.codes][0] == ("http://loinc.org", "8867-4")
    assert template.value is not None
    assert (template.value.value_type, template.value.system, template.value.code) == (
        "Quantity",
        "http://unitsofmeasure.org",
        "/min",
    )
    assert [c.code for cat in template.category for c in cat.codes] == ["vital-signs"]


def _point(source: dict) -> dict:
    values = [
        {"fpVal": 1.5} if f["format"] == "floatPoint" else {"intVal": 1} for f in source["dataType"]["field"]
    ]
    return {
        "dataTypeName": source["dataType"]["name"],
        "startTimeNanos": 1700000000000000000,
        "endTimeNanos": 1700000000123456789,
        "value": values,
    }


def _measurements_per_source(sample_sources, style):
    device, _ = generate_templates(sample_sources, style)
    extractor = MeasurementExtractor(load_device_mapping(device))
    found = {}
    for source in sample_sources["dataSource"]:
        page = {"dataSourceId": source["dataStreamId"], "point": [_point(source)]}
        (message,) = build_device_messages("110248495921238986420", source, [page])
        measurements, failures = extractor.extract(wrap_message(json.loads(message.body)))
        assert failures == [], (source["dataStreamId"], failures)
        found[source["dataStreamId"]] = measurements
    return found


def test_device_messages_give_one_measurement_per_point_with_standard_templates(sample_sources, fixture_dir):
    deployed = json.loads((fixture_dir / "devicecontent.json").read_text("utf-8"))["template"]

    found = _measurements_per_source(sample_sources, "standard")

    for source, own in zip(sample_sources["dataSource"], deployed, strict=True):
        measurements = found[source["dataStreamId"]]
        assert [m.type for m in measurements] == [own["template"]["typeName"]]
        assert measurements[0].occurrence_time_utc == "2023-11-14T22:13:20.1240000Z"
        assert measurements[0].patient_id == "110248495921238986420"


def test_original_templates_double_count_resting_heart_rate(sample_sources):
    found = _measurements_per_source(sample_sources, "original")

    resting = (
        "derived:com.google.heart_rate.bpm:com.google.android.gms:resting_heart_rate<-merge_heart_rate_bpm"
    )
    assert len(found[resting]) == 2
    assert sum(len(m) for m in found.values()) == 35


def test_enum_fields_arrive_as_google_names(sample_sources):
    found = _measurements_per_source(sample_sources, "standard")

    (bp,) = found["raw:com.google.blood_pressure:com.google.android.apps.fitness:user_input"]
    assert bp.properties == [
        ("blood_pressure_systolic", "1.5"),
        ("blood_pressure_diastolic", "1.5"),
        ("body_position", "BODY_POSITION_STANDING"),
        ("blood_pressure_measurement_location", "BLOOD_PRESSURE_MEASUREMENT_LOCATION_LEFT_WRIST"),
    ]
