"""Every failure becomes a dead letter with MedTech's error name; the rest of the batch still converts."""

from __future__ import annotations

import copy

from fitonfhir_dagster.medtech.converter import Converter, DeviceEvent
from fitonfhir_dagster.medtech.identity import (
    CreateIdentity,
    DeviceLink,
    LookupIdentity,
    PatientReferenceIdentity,
)
from tests.medtech.medtech_fitdata import SUB, fixture_json, fixture_text, heart_rate_message

DEVICE = fixture_text("devicecontent.json")
FHIR = fixture_text("fhirmapping.json")
HR_TYPE = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
HR_DEVICE = f"{SUB}.com.google.android.gms"


def reasons(result) -> list[str]:
    return [d.reason for d in result.dead_letters]


def create_converter(device=DEVICE, fhir=FHIR) -> Converter:
    return Converter(device, fhir, CreateIdentity(), clock=lambda: 0)


def test_one_bad_point_is_dead_lettered_and_the_others_convert():
    message = heart_rate_message([70.0, 71.0, 72.0])
    message["point"][1]["value"][0]["fpVal"] = None
    result = create_converter().convert([message])
    assert reasons(result) == ["IncompatibleDataException"]
    letter = result.dead_letters[0]
    assert "Unable to extract required value for [bpm]" in letter.error
    template_lines = [n for n, line in enumerate(DEVICE.splitlines(), 1) if line.strip() == '"template": {']
    assert letter.detail == f"template 8 (CalculatedContent '{HR_TYPE}', line {template_lines[8]}), match 1"
    assert letter.message_index == 0
    assert sorted(o["valueQuantity"]["value"] for o in result.observations) == [70, 72]
    assert (result.points_matched, result.measurements) == (3, 2)


def test_a_message_that_is_not_json_is_an_invalid_data_format():
    result = create_converter().convert([b"{not json", heart_rate_message([70.0])])
    assert reasons(result) == ["InvalidDataFormatException"]
    assert result.dead_letters[0].message_index == 0 and len(result.observations) == 1


def test_int64_sent_as_strings_fail_the_timestamp_function_as_a_template_expression_error():
    message = heart_rate_message([70.0, 71.0])
    message["point"][0]["endTimeNanos"] = str(message["point"][0]["endTimeNanos"])
    result = create_converter().convert([message])
    assert reasons(result) == ["TemplateExpressionException"]
    assert "multiply" in result.dead_letters[0].error
    assert len(result.observations) == 1


def test_a_type_without_a_fhir_template_is_template_not_found():
    fhir = fixture_json("fhirmapping.json")
    fhir["template"] = [t for t in fhir["template"] if t["template"]["typeName"] != HR_TYPE]
    result = create_converter(fhir=fhir).convert([heart_rate_message([70.0])])
    assert reasons(result) == ["TemplateNotFoundException"]
    assert HR_TYPE in result.dead_letters[0].error


def test_create_mode_without_a_patient_id_is_resource_identity_not_defined():
    message = heart_rate_message([70.0])
    del message["patientIdentifier"]
    result = create_converter().convert([message])
    assert reasons(result) == ["ResourceIdentityNotDefinedException"]
    assert result.observations == [] and result.patients == []


def test_patient_reference_mode_links_our_patient_and_dead_letters_unmapped_users():
    converter = Converter(DEVICE, FHIR, PatientReferenceIdentity({SUB: "patient-42"}), clock=lambda: 0)
    (obs,) = converter.convert([heart_rate_message([70.0])]).observations
    assert obs["subject"] == {"reference": "Patient/patient-42"}
    assert obs["identifier"][0]["value"].startswith("patient-42.")
    other = heart_rate_message([70.0])
    other["patientIdentifier"] = "someone-else"
    result = converter.convert([other])
    assert reasons(result) == ["FhirResourceNotFoundException"]
    assert "no onboarded Patient" in result.dead_letters[0].error


def test_lookup_mode_needs_one_linked_device():
    message = heart_rate_message([70.0])
    missing = Converter(DEVICE, FHIR, LookupIdentity({}), clock=lambda: 0).convert([message])
    assert reasons(missing) == ["FhirResourceNotFoundException"]
    unlinked = Converter(DEVICE, FHIR, LookupIdentity({HR_DEVICE: DeviceLink("d1", None)})).convert([message])
    assert (
        reasons(unlinked) == ["FhirResourceNotFoundException"]
        and "not linked" in unlinked.dead_letters[0].error
    )
    twice = LookupIdentity.from_resources(
        [
            {"id": "d1", "identifier": [{"value": HR_DEVICE}], "patient": {"reference": "Patient/p1"}},
            {"id": "d2", "identifier": [{"value": HR_DEVICE}], "patient": {"reference": "Patient/p1"}},
        ]
    )
    assert reasons(Converter(DEVICE, FHIR, twice).convert([message])) == ["MultipleResourceFoundException"]
    linked = LookupIdentity({HR_DEVICE: DeviceLink("d1", "p1")})
    (obs,) = Converter(DEVICE, FHIR, linked).convert([message]).observations
    assert obs["subject"] == {"reference": "Patient/p1"} and obs["device"] == {"reference": "Device/d1"}


def test_a_value_dotnet_writes_in_exponent_form_is_an_invalid_quantity():
    result = create_converter().convert([heart_rate_message([70.0, 1e20])])
    assert reasons(result) == ["InvalidQuantityFhirValueException"]
    assert "1E+20" in result.dead_letters[0].error and len(result.observations) == 1


IOT_DEVICE = {
    "templateType": "CollectionContent",
    "template": [
        {
            "templateType": "IotJsonPathContent",
            "template": {
                "typeName": "hr",
                "typeMatchExpression": "$..[?(@Body.heartRate)]",
                "patientIdExpression": "$.Body.patientId",
                "values": [{"valueName": "hr", "valueExpression": "$.Body.heartRate", "required": "true"}],
            },
        }
    ],
}


def iot_fhir(period: int) -> dict:
    value = {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000}
    template = {"typeName": "hr", "periodInterval": period, "codes": [], "value": value}
    return {
        "templateType": "CollectionFhir",
        "template": [{"templateType": "CodeValueFhir", "template": template}],
    }


def test_correlation_period_without_a_correlation_id_is_correlation_id_not_defined():
    event = DeviceEvent(
        {"heartRate": 70, "patientId": "p"},
        {"iothub-creation-time-utc": "2023-11-14T10:00:00Z"},
        {"iothub-connection-device-id": "dev"},
    )
    result = Converter(IOT_DEVICE, iot_fhir(-1), CreateIdentity()).convert([event])
    assert reasons(result) == ["CorrelationIdNotDefinedException"]


def test_iot_templates_read_device_and_time_from_event_properties_with_the_enqueued_fallback():
    event = DeviceEvent(
        {"heartRate": 70, "patientId": "p"},
        {},
        {"iothub-connection-device-id": "dev", "iothub-enqueuedtime": "2023-11-14T10:00:00Z"},
    )
    (obs,) = Converter(IOT_DEVICE, iot_fhir(0), CreateIdentity()).convert([event]).observations
    assert obs["effectivePeriod"]["start"] == "2023-11-14T10:00:00.0000000Z"
    assert obs["valueSampledData"]["data"] == "70"


def test_type_names_differing_in_case_share_the_fhir_template_but_not_the_identifier():
    device = copy.deepcopy(IOT_DEVICE)
    second = copy.deepcopy(device["template"][0])
    second["template"]["typeName"] = "HR"
    device["template"].append(second)
    fhir = iot_fhir(0)
    event = DeviceEvent(
        {"heartRate": 70, "patientId": "p"},
        {"iothub-creation-time-utc": "2023-11-14T10:00:00Z"},
        {"iothub-connection-device-id": "dev"},
    )
    result = Converter(device, fhir, CreateIdentity()).convert([event])
    # Types "hr" and "HR" share the FHIR template (case-insensitive) but not the identifier (case-sensitive).
    assert len(result.observations) == 2 and result.dead_letters == []
