"""MedTech parity at the edges: 8+ fractional digits, same-identifier order in a batch, merges without
the raw series."""

from __future__ import annotations

import hashlib

from fitonfhir_dagster.medtech.converter import Converter, merge_observation
from fitonfhir_dagster.medtech.identity import IOMT_SYSTEM, CreateIdentity


def _template(type_name: str, array: str) -> dict:
    return {
        "templateType": "CalculatedContent",
        "template": {
            "typeName": type_name,
            "typeMatchExpression": f"$.Body.{array}[*]",
            "deviceIdExpression": "$.Body.deviceId",
            "patientIdExpression": "$.Body.patientId",
            "timestampExpression": "$.matchedToken.t",
            "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.hr", "required": True}],
        },
    }


DEVICE = {
    "templateType": "CollectionContent",
    "template": [_template("hr", "readings"), _template("hrs", "series")],
}
FHIR = {
    "templateType": "CollectionFhir",
    "template": [
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "hr",
                "periodInterval": 0,
                "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
                "value": {"valueType": "Quantity", "valueName": "hr", "unit": "/min"},
            },
        },
        {
            "templateType": "CodeValueFhir",
            "template": {
                "typeName": "hrs",
                "periodInterval": 60,
                "codes": [{"code": "8867-4", "system": "http://loinc.org"}],
                "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 60_000},
            },
        },
    ],
}


def message(readings=(), series=()) -> dict:
    return {
        "deviceId": "dev-1",
        "patientId": "pat-1",
        "readings": [{"t": t, "hr": hr} for t, hr in readings],
        "series": [{"t": t, "hr": hr} for t, hr in series],
    }


def converter() -> Converter:
    return Converter(DEVICE, FHIR, CreateIdentity(), clock=lambda: 0)


def test_more_than_seven_fractional_digits_round_to_the_nearest_tick_like_dotnet():
    (late, early) = (
        converter()
        .convert(
            [message(readings=[("2023-11-14T10:00:00.99999996Z", 71), ("2023-11-14T10:00:05.12345678Z", 72)])]
        )
        .observations
    )
    # .99999996 s is 9999999.6 ticks: .NET rounds to the next second (truncating kept 10:00:00).
    assert late["effectivePeriod"] == {
        "start": "2023-11-14T10:00:01.0000000Z",
        "end": "2023-11-14T10:00:01.0000000Z",
    }
    value = late["identifier"][0]["value"]
    assert value.endswith(".hr.20231114100001Z.20231114100001Z")
    assert late["id"] == hashlib.sha256(f"{IOMT_SYSTEM}_{value}".encode()).hexdigest()
    assert early["effectivePeriod"]["start"] == "2023-11-14T10:00:05.1234568Z"


def _one_batch_at_a_time(messages: list[dict]) -> dict[str, dict]:
    """What a FHIR server holds when each message arrives in a batch of its own (MedTech: cache, merge)."""
    store: dict[str, dict] = {}
    for m in messages:
        result = converter().convert([m])
        for new in result.observations:
            current = store.get(new["id"])
            store[new["id"]] = new if current is None else result.merge_observation(current, new)[0]
    return store


def test_one_batch_gives_what_the_same_messages_give_one_batch_each():
    messages = [
        # Two readings in one second (one identifier), the later reading sent first.
        message(readings=[("2023-11-14T10:00:00.700Z", 80)], series=[("2023-11-14T10:00:10Z", 60)]),
        message(readings=[("2023-11-14T10:00:00.300Z", 70)], series=[("2023-11-14T10:00:40Z", 61)]),
        message(readings=[("2023-11-14T10:00:09Z", 75)], series=[("2023-11-14T10:05:00Z", 62)]),
    ]
    together = {o["id"]: o for o in converter().convert(messages).observations}

    apart = _one_batch_at_a_time(messages)

    # The hourly SampledData Observation is one group in one batch (MedTech writes it "final") and
    # merged in later batches ("amended"); everything else, status included, is identical.
    hourly = next(i for i, o in together.items() if "valueSampledData" in o)
    assert (together[hourly]["status"], apart[hourly]["status"]) == ("final", "amended")
    apart[hourly]["status"] = "final"
    assert together == apart
    same_second = next(o for o in together.values() if o["effectivePeriod"]["start"].endswith("00.3000000Z"))
    assert same_second["valueQuantity"]["value"] == 70  # the message that came last wins
    assert same_second["effectivePeriod"]["end"] == "2023-11-14T10:00:00.7000000Z"
    assert same_second["status"] == "amended"


def test_merging_without_the_raw_series_lets_new_data_replace_the_stored_slot():
    stored = converter().convert([message(series=[("2023-11-14T10:00:30Z", 70)])]).observations[0]
    later = converter().convert(
        [message(series=[("2023-11-14T10:00:45Z", 75), ("2023-11-14T10:02:10Z", 72)])]
    )
    new = later.observations[0]

    exact, _ = later.merge_observation(stored, new)
    decoded, changed = merge_observation(stored, new)  # only the two resources, as a caller may have

    assert changed and decoded == exact
    assert decoded["valueSampledData"]["data"].split(" ")[:3] == ["75", "E", "72"]
