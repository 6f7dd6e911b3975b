"""Grouping, period buckets, SampledData build and merge, effectivePeriod, merge / no-op / amended."""

from __future__ import annotations

import hashlib

import pytest

from fitonfhir_dagster.medtech.converter import Converter, merge_observation
from fitonfhir_dagster.medtech.identity import CreateIdentity
from fitonfhir_dagster.medtech.measurements import dotnet_double_text
from fitonfhir_dagster.medtech.medtech_errors import NotSupportedException
from fitonfhir_dagster.medtech.observations import parse_decimal
from tests.medtech.medtech_fitdata import IOMT, fixture_text, heart_rate_message

DEVICE = {
    "templateType": "CollectionContent",
    "template": [
        {
            "templateType": "CalculatedContent",
            "template": {
                "typeName": "hr",
                "typeMatchExpression": "$.Body.readings[*]",
                "deviceIdExpression": "$.Body.deviceId",
                "patientIdExpression": "$.Body.patientId",
                "timestampExpression": "$.matchedToken.t",
                "values": [
                    {"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True},
                    {"valueName": "note", "valueExpression": "$.matchedToken.note"},
                ],
            },
        }
    ],
}


def fhir(period_interval: int, default_period: int = 600_000, components: bool = False) -> dict:
    template: dict = {
        "typeName": "hr",
        "periodInterval": period_interval,
        "category": [{"text": "vital", "codes": [{"code": "vital-signs", "system": "http://x/cat"}]}],
        "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
        "value": {
            "valueType": "SampledData",
            "valueName": "hr",
            "defaultPeriod": default_period,
            "unit": "/min",
        },
    }
    if components:
        template["components"] = [
            {"codes": [{"code": "note-code"}], "value": {"valueType": "String", "valueName": "note"}},
            {
                "codes": [{"code": "hr-series"}],
                "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": default_period},
            },
        ]
    return {
        "templateType": "CollectionFhir",
        "template": [{"templateType": "CodeValueFhir", "template": template}],
    }


def readings(*pairs: tuple[str, object], **extra) -> dict:
    items = [dict({"t": t, "hr": hr}, **extra) for t, hr in pairs]
    return {"deviceId": "dev-1", "patientId": "pat-1", "readings": items}


def convert(fhir_mapping: dict, *messages: dict):
    return Converter(DEVICE, fhir_mapping, CreateIdentity(), clock=lambda: 0).convert(messages)


def test_hourly_sampled_data_fills_slots_with_the_last_value_and_e_for_gaps():
    result = convert(
        fhir(60),
        readings(("2023-11-14T10:00:00Z", 70), ("2023-11-14T10:05:00Z", 71), ("2023-11-14T10:12:00.5Z", 72)),
    )
    (obs,) = result.observations
    assert obs["valueSampledData"] == {
        "origin": {"value": 0, "unit": "/min"},
        "period": 600000,
        "dimensions": 1,
        "data": "71 72 E E E E",
    }
    assert obs["effectivePeriod"] == {
        "start": "2023-11-14T10:00:00.0000000Z",
        "end": "2023-11-14T10:59:59.9999999Z",
    }
    assert obs["identifier"][0]["value"].endswith(".hr.20231114100000Z.20231114105959Z")
    assert obs["category"] == [
        {"coding": [{"system": "http://x/cat", "code": "vital-signs"}], "text": "vital"}
    ]
    assert obs["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "8867-4",
        "display": "Heart rate",
    }


def test_readings_in_two_hours_make_two_hourly_observations():
    result = convert(fhir(60), readings(("2023-11-14T10:59:59Z", 70), ("2023-11-14T11:00:00Z", 71)))
    starts = sorted(o["effectivePeriod"]["start"] for o in result.observations)
    assert starts == ["2023-11-14T10:00:00.0000000Z", "2023-11-14T11:00:00.0000000Z"]


def test_daily_bucket_is_the_utc_day_and_offsets_are_converted_to_utc():
    result = convert(fhir(1440, default_period=3_600_000), readings(("2023-11-14T01:30:00+02:00", 64)))
    (obs,) = result.observations
    assert obs["effectivePeriod"] == {
        "start": "2023-11-13T00:00:00.0000000Z",
        "end": "2023-11-13T23:59:59.9999999Z",
    }
    assert obs["valueSampledData"]["data"].split(" ")[23] == "64"
    assert obs["valueSampledData"]["data"].count("E") == 23


def test_instance_sampled_data_has_one_slot_and_a_zero_length_period_with_seven_digits():
    (obs,) = convert(fhir(0), readings(("2023-11-14T10:00:00.1234567Z", 70))).observations
    assert obs["valueSampledData"]["data"] == "70"
    assert obs["effectivePeriod"] == {
        "start": "2023-11-14T10:00:00.1234567Z",
        "end": "2023-11-14T10:00:00.1234567Z",
    }


def test_sampled_data_merge_adds_new_slots_and_keeps_the_stored_value_on_an_exact_time_collision():
    first = convert(
        fhir(60), readings(("2023-11-14T10:00:00Z", 70), ("2023-11-14T10:10:00Z", 71))
    ).observations[0]
    later = convert(fhir(60), readings(("2023-11-14T10:10:00Z", 99), ("2023-11-14T10:45:00Z", 75)))
    merged, changed = later.merge_observation(first, later.observations[0])
    assert changed and merged["status"] == "amended"
    assert merged["valueSampledData"]["data"] == "70 71 E E 75 E"
    assert merged["issued"] == first["issued"]


def test_sampled_data_merge_without_raw_values_decodes_the_new_string():
    first = convert(fhir(60), readings(("2023-11-14T10:00:00Z", 70))).observations[0]
    new = convert(fhir(60), readings(("2023-11-14T10:30:00Z", 73))).observations[0]
    merged, changed = merge_observation(first, new)
    assert changed and merged["valueSampledData"]["data"] == "70 E E 73 E E"


def test_reconverting_the_same_message_merges_to_no_change():
    message = readings(("2023-11-14T10:00:00Z", 70), ("2023-11-14T10:20:00Z", 72))
    stored = convert(fhir(60), message).observations[0]
    again = convert(fhir(60), message)
    merged, changed = again.merge_observation(stored, again.observations[0])
    assert not changed and merged == stored and merged["status"] == "final"


def test_quantity_merge_replaces_the_value_widens_the_period_and_amends():
    device = fixture_text("devicecontent.json")
    mapping = fixture_text("fhirmapping.json")
    converter = Converter(device, mapping, CreateIdentity(), clock=lambda: 0)
    stored = converter.convert([heart_rate_message([72.0])]).observations[0]
    assert merge_observation(stored, converter.convert([heart_rate_message([72.0])]).observations[0]) == (
        stored,
        False,
    )
    changed_value = converter.convert([heart_rate_message([80.0])]).observations[0]
    merged, changed = merge_observation(stored, changed_value)
    assert changed and merged["status"] == "amended" and merged["valueQuantity"] == {"value": 80}
    assert merged["id"] == stored["id"]


def test_two_readings_in_the_same_second_become_one_observation_like_medtech():
    hr = heart_rate_message([70.0, 71.0], step_ns=300_000_000)
    converter = Converter(
        fixture_text("devicecontent.json"),
        fixture_text("fhirmapping.json"),
        CreateIdentity(),
        clock=lambda: 0,
    )
    (obs,) = converter.convert([hr]).observations
    assert obs["valueQuantity"] == {"value": 71}
    assert obs["status"] == "amended"
    assert obs["effectivePeriod"] == {
        "start": "2023-11-14T22:13:20.1240000Z",
        "end": "2023-11-14T22:13:20.4240000Z",
    }


def test_the_latest_message_wins_for_the_same_time():
    result = convert(fhir(0), readings(("2023-11-14T10:00:00Z", 70)), readings(("2023-11-14T10:00:00Z", 75)))
    (obs,) = result.observations
    assert obs["valueSampledData"]["data"] == "75"


def test_components_carry_the_iomt_coding_and_components_without_data_are_left_out():
    with_note = convert(fhir(0, components=True), readings(("2023-11-14T10:00:00Z", 70), note="resting"))
    (obs,) = with_note.observations
    codes = [c["code"] for c in obs["component"]]
    assert codes[0] == {
        "coding": [{"code": "note-code"}, {"system": IOMT, "code": "note", "display": "note"}],
        "text": "note",
    }
    assert obs["component"][0]["valueString"] == "resting"
    assert obs["component"][1]["valueSampledData"]["data"] == "70"
    (bare,) = convert(fhir(0, components=True), readings(("2023-11-14T10:00:00Z", 70))).observations
    assert [c["code"]["text"] for c in bare["component"]] == ["hr"]


def test_merge_appends_missing_components_and_keeps_foreign_ones():
    (stored,) = convert(fhir(0, components=True), readings(("2023-11-14T10:00:00Z", 70))).observations
    stored = dict(stored, component=[*stored["component"], {"code": {"text": "manual"}, "valueString": "x"}])
    (new,) = convert(fhir(0, components=True), readings(("2023-11-14T10:00:00Z", 70), note="n")).observations
    merged, changed = merge_observation(stored, new)
    assert changed
    assert [c["code"]["text"] for c in merged["component"]] == ["hr", "manual", "note"]


def test_merge_with_a_value_of_another_type_is_not_supported():
    (stored,) = convert(fhir(0), readings(("2023-11-14T10:00:00Z", 70))).observations
    stored = {k: v for k, v in stored.items() if k != "valueSampledData"} | {"valueString": "70"}
    (new,) = convert(fhir(0), readings(("2023-11-14T10:00:00Z", 70))).observations
    with pytest.raises(NotSupportedException, match="valueString"):
        merge_observation(stored, new)


def test_merge_reads_an_existing_effective_date_time_and_writes_a_period():
    (new,) = convert(fhir(0), readings(("2023-11-14T10:00:00Z", 70))).observations
    stored = {k: v for k, v in new.items() if k != "effectivePeriod"} | {
        "effectiveDateTime": "2023-11-14T09:00:00Z"
    }
    merged, changed = merge_observation(stored, new)
    assert changed and "effectiveDateTime" not in merged
    assert merged["effectivePeriod"] == {
        "start": "2023-11-14T09:00:00.0000000Z",
        "end": "2023-11-14T10:00:00.0000000Z",
    }


def test_observation_id_is_the_sha256_of_system_underscore_identifier():
    (obs,) = convert(fhir(0), readings(("2023-11-14T10:00:00Z", 70))).observations
    patient = hashlib.sha256(b"_pat-1").hexdigest()
    device = hashlib.sha256(b"_dev-1").hexdigest()
    value = f"{patient}.{device}.hr.20231114100000Z.20231114100000Z"
    assert obs["identifier"] == [{"system": IOMT, "value": value}]
    assert obs["id"] == hashlib.sha256(f"{IOMT}_{value}".encode()).hexdigest()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (72.0, "72"),
        (75.5, "75.5"),
        (0.1, "0.1"),
        (1e15, "1E+15"),
        (123456789012345.6, "123456789012345.6"),
        (1e-05, "1E-05"),
        (0.0001, "0.0001"),
        (-0.0, "-0"),
        (1.5e-7, "1.5E-07"),
    ],
)
def test_doubles_are_written_as_dotnet_writes_them(number, text):
    assert dotnet_double_text(number) == text


@pytest.mark.parametrize(
    ("text", "number"),
    [("72", 72), ("75.50", 75.5), ("1,000", 1000), (" -3.25 ", -3.25), ("5-", -5), (".5", 0.5)],
)
def test_quantity_text_is_parsed_like_dotnet_decimal_parse(text, number):
    assert parse_decimal(text) == number


@pytest.mark.parametrize("text", ["1E+15", "abc", "", "1.2.3", "NaN", "-5-"])
def test_quantity_text_dotnet_rejects_is_rejected(text):
    with pytest.raises(ValueError):
        parse_decimal(text)
