"""Odd input through the converter, and the shortcuts inside its one path on ordinary and odd input.

Whole conversions of pages with odd values in every read place give Observations and MedTech's dead
letters; the per-message field index of recursive filters finds what the plain walk finds, the
combined instant formatter gives what the two formatters give, and message-level paths are told
apart from token paths (their values are read once per message).
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from typing import Any

import pytest

from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.medtech.converter import Converter, DeviceEvent
from fitonfhir_dagster.medtech.device_templates import Expression
from fitonfhir_dagster.medtech.identity import CreateIdentity, PatientReferenceIdentity
from fitonfhir_dagster.medtech.jsonpath import compile_jsonpath
from fitonfhir_dagster.medtech.timestamps import (
    MAX_TICKS,
    MIN_TICKS,
    format_identifier_segment,
    format_instant_texts,
    format_period_instant,
)
from tests.medtech.medtech_fitdata import (
    SUB,
    T0_NS,
    data_sources,
    fixture_json,
    fixture_text,
    heart_rate_message,
    message,
    point,
    sample_values,
)

ODD = [
    None,
    "",
    " ",
    "abc",
    "72",
    True,
    False,
    0,
    1,
    -1,
    2,
    1.0,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    2**63,
    -(2**63) - 1,
    10**30,
    -(10**30),
    2**1100,
    [],
    [1],
    {},
    {"a": 1},
]
HR_TYPE = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"


def test_message_level_paths_are_recognised_and_token_paths_are_not():
    assert Expression("$.Body.deviceIdentifier", "JsonPath").reads_message_only
    assert not Expression("matchedToken.value[0].fpVal", "JsonPath").reads_message_only
    assert not Expression("$..deviceIdentifier", "JsonPath").reads_message_only
    assert not Expression("Body.deviceIdentifier", "JmesPath").reads_message_only


def test_the_combined_instant_formatter_matches_the_two_formatters():
    rng = random.Random(3)
    samples = [0, -1, 1, MIN_TICKS, MAX_TICKS, -(10**7), -(10**7) - 1, 17000000001240000]
    samples += [rng.randint(MIN_TICKS, MAX_TICKS) for _ in range(20_000)]
    samples += [rng.randint(-(10**12), 10**12) for _ in range(5_000)]
    for ticks in samples:
        assert format_instant_texts(ticks) == (format_period_instant(ticks), format_identifier_segment(ticks))


def test_the_field_index_finds_what_the_plain_walk_finds_in_document_order():
    path = compile_jsonpath("$..[?(@t == 'a')]")
    document = {
        "t": "a",
        "x": [{"t": "a", "n": 1, "in": {"t": "a", "n": 2}}, [], {}, [[{"t": "a", "n": 3}]], 0, None, ""],
        "y": {"t": "b", "z": [{"t": "a", "n": 4}, {"t": 1}, {"t": None}]},
        "w": {"t": "a", "n": 5},
    }
    indexed = path.select(document, {})
    assert indexed == path.select(document)
    assert [node.get("n") for node in indexed] == [None, 1, 2, 3, 4, 5]


def random_document(rng: random.Random, depth: int) -> Any:
    """JSON-like trees with ``t`` names at every level, empty containers, and look-alikes that are no
    match (a ``str`` subclass, a ``dict`` subclass, numbers)."""
    roll = rng.random()
    if depth <= 0 or roll < 0.3:
        return rng.choice([None, 0, 1, 2.5, "", "a", True, False, [], {}, NamedText("a")])
    if roll < 0.55:
        return [random_document(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    node: dict[str, Any] = {}
    if rng.random() < 0.6:
        node["t"] = rng.choice(["a", "a", "b", 1, None, NamedText("a"), [], {"t": "a"}])
    for key in rng.sample(["x", "y", "value", "mapVal", "n"], rng.randint(0, 4)):
        node[key] = random_document(rng, depth - 1)
    if rng.random() < 0.05:
        return OrderedDict(node)
    return node


class NamedText(str):
    """Equal to its text, yet not a JSON string: neither walk may match it."""


class Untestable:
    """A non-JSON value whose truth test fails."""

    def __bool__(self) -> bool:
        raise ValueError("no truth value")


def ids(nodes: list[Any]) -> list[int]:
    return [id(node) for node in nodes]


@pytest.mark.parametrize("seed", range(40))
def test_the_field_index_agrees_with_the_plain_walk_on_random_trees(seed):
    rng = random.Random(seed)
    document = random_document(rng, 7)
    for literal in ("a", "b"):
        path = compile_jsonpath(f"$..[?(@t == '{literal}')]")
        assert ids(path.select(document, {})) == ids(path.select(document))


def test_the_field_index_agrees_on_pages_of_points():
    page = heart_rate_message([70.0, 71.0, 72.0], step_ns=400_000_000)
    page["point"][1]["value"][0]["mapVal"] = [{"key": "k", "dataTypeName": page["point"][0]["dataTypeName"]}]
    page["point"].insert(1, [page["point"][0].copy(), []])
    wrapped = {"Body": page, "Properties": {}, "SystemProperties": {"dataTypeName": "x"}}
    path = compile_jsonpath(f"$..[?(@dataTypeName == '{page['point'][0]['dataTypeName']}')]")
    indexed = path.select(wrapped, {})
    assert ids(indexed) == ids(path.select(wrapped))
    assert len(indexed) == 5


def test_the_field_index_handles_deep_nesting_and_values_without_a_truth_value():
    deep: Any = {"t": "a", "n": 0}
    for level in range(1, 3000):
        deep = [{"t": "a", "n": level, "x": deep}] if level % 2 else {"t": "b", "y": [deep, Untestable()]}
    path = compile_jsonpath("$..[?(@t == 'a')]")
    indexed = path.select(deep, {})
    assert ids(indexed) == ids(path.select(deep))
    assert len(indexed) == 1501
    odd = {"x": [Untestable(), {"t": "a"}], "t": "a"}
    assert ids(path.select(odd, {})) == ids(path.select(odd)) == [id(odd), id(odd["x"][1])]


def sampled_heart_rate_mapping() -> dict[str, Any]:
    """The original FHIR mapping with heart rate as hourly SampledData."""
    mapping = fixture_json("fhirmapping.json")
    for entry in mapping["template"]:
        template = entry["template"]
        if template["typeName"] == HR_TYPE:
            template["periodInterval"] = 60
            template["value"] = {"valueType": "SampledData", "valueName": "bpm", "defaultPeriod": 1000}
    return mapping


# ----------------------------------------------------------------------------- whole conversions


def odd_corpus(seed: int) -> list[Any]:
    """Messages of every stream: ordinary pages, pages with odd values in every read place, odd ids."""
    rng = random.Random(seed)
    messages: list[Any] = []
    for source in data_sources():
        name = source["dataType"]["name"]
        ordinary = [point(name, T0_NS + i * 37_000_000_000, sample_values(source, i)) for i in range(4)]
        messages.append(message(source, ordinary))
        odd_points: list[Any] = []
        for i in range(12):
            p = point(name, T0_NS + i * 1_000_000_000, sample_values(source, i))
            roll = rng.random()
            if roll < 0.2:
                p["endTimeNanos"] = rng.choice([*ODD, T0_NS + 0.5, str(T0_NS)])
            elif roll < 0.25:
                del p["endTimeNanos"]
            elif roll < 0.6 and p["value"]:
                entry = rng.randrange(len(p["value"]))
                p["value"][entry][rng.choice(["fpVal", "intVal"])] = rng.choice(ODD)
            elif roll < 0.65:
                p["value"] = rng.choice([None, [], "x"])
            elif roll < 0.7:
                p = rng.choice(ODD)
            odd_points.append(p)
        page = message(source, [])
        page["point"] = odd_points
        messages.append(page)
        for key in ("deviceIdentifier", "patientIdentifier"):
            for bad in (None, "", " ", 12, 1.5, True, {"x": 1}, [1, 2]):
                broken = message(source, copy.deepcopy(ordinary[:2]))
                broken[key] = bad
                messages.append(broken)
    # The same points again in a later message (merge), a non-JSON body and an event with properties.
    messages += copy.deepcopy(messages[:6])
    messages += [b"not json", "[]", DeviceEvent(heart_rate_message([70.0, 71.5]), {"p": 1}, {"s": 2})]
    return messages


@pytest.mark.parametrize("style", ["original", "standard", "sampled"])
def test_odd_pages_give_observations_and_medtech_dead_letters(style):
    device: Any = fixture_text("devicecontent.json")
    fhir: Any = fixture_text("fhirmapping.json")
    identity: Any = CreateIdentity
    if style == "standard":
        device, fhir = generate_templates(fixture_json("dataSources.json"), style="standard")
        identity = lambda: PatientReferenceIdentity({SUB: "patient-1"})  # noqa: E731
    elif style == "sampled":
        fhir = sampled_heart_rate_mapping()
    result = Converter(device, fhir, identity(), clock=lambda: 0).convert(odd_corpus(seed=11))
    observations, dead_letters = repr(result.observations), [d.to_dict() for d in result.dead_letters]
    assert "valueQuantity" in observations and len(dead_letters) > 100
    assert ("valueSampledData" in observations) == (style == "sampled")
    reasons = {d["reason"] for d in dead_letters}
    assert {
        "IncompatibleDataException",
        "TemplateExpressionException",
        "InvalidQuantityFhirValueException",
    } <= reasons


def test_a_bad_point_in_the_middle_of_a_page_keeps_the_order_of_the_rest():
    page = heart_rate_message([70.0, 71.0, 72.0, 73.0, 74.0], step_ns=400_000_000)
    page["point"][2]["value"][0]["fpVal"] = "not a number"
    page["point"][3]["endTimeNanos"] = None
    device, fhir = fixture_text("devicecontent.json"), fixture_text("fhirmapping.json")
    result = Converter(device, fhir, CreateIdentity(), clock=lambda: 0).convert([page])
    assert [d.reason for d in result.dead_letters] == [
        "TemplateExpressionException",
        "InvalidQuantityFhirValueException",
    ]


def test_a_value_name_read_twice_keeps_its_first_value():
    device = fixture_json("devicecontent.json")
    for entry in device["template"]:
        if entry["template"]["typeName"] == HR_TYPE:
            entry["template"]["values"].append(
                {"valueName": "bpm", "valueExpression": "matchedToken.modifiedTimeMillis"}
            )
    fhir = fixture_text("fhirmapping.json")
    page = heart_rate_message([70.0, 71.0])
    result = Converter(device, fhir, CreateIdentity(), clock=lambda: 0).convert([page])
    assert result.dead_letters == []
    assert [o["valueQuantity"]["value"] for o in result.observations] == [70, 71]
