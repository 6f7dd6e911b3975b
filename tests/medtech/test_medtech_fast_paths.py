"""The specialised (fast) paths give exactly what the general evaluator and group builder give.

Each specialisation is checked against the general path on ordinary and odd input: the token readers
against ``Expression.select_one`` on the full scope, the combined instant formatter against the two
formatters, the per-message field index against the plain walk, and whole conversions with
``fast_paths`` on and off (same Observations, ids, dead letters, in the same order).
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from typing import Any

import pytest

from fitonfhir_dagster.fitmapping.template_generation import generate_templates
from fitonfhir_dagster.medtech.converter import Converter, DeviceEvent
from fitonfhir_dagster.medtech.device_templates import Expression, load_device_mapping
from fitonfhir_dagster.medtech.fhir_templates import load_fhir_mapping
from fitonfhir_dagster.medtech.identity import CreateIdentity, PatientReferenceIdentity
from fitonfhir_dagster.medtech.jmespath_functions import DateTimeValue
from fitonfhir_dagster.medtech.jsonpath import compile_jsonpath
from fitonfhir_dagster.medtech.measurements import Measurement, MeasurementExtractor
from fitonfhir_dagster.medtech.observations import (
    InstantObservations,
    build_observation,
    build_observation_groups,
)
from fitonfhir_dagster.medtech.timestamps import (
    MAX_TICKS,
    MIN_TICKS,
    format_identifier_segment,
    format_instant_texts,
    format_period_instant,
)
from fitonfhir_dagster.medtech.token_readers import UNSURE
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

WRAPPED = {"Body": {"deviceIdentifier": "d"}, "Properties": {}, "SystemProperties": {}}
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
TIMESTAMPS = [
    "fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `0.000001`)))",
    "fromUnixTimestampMs(floor(multiply(matchedToken.endTimeNanos, `0.000001`)))",
    "fromUnixTimestamp(ceil(multiply(matchedToken.endTimeNanos, `0.000000001`)))",
    "fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `2`)))",
    "fromUnixTimestampMs(ceil(multiply(matchedToken.a.b, `0.001`)))",
]
ENUM = (
    'matchedToken.value[2].intVal | [{"v":@,"n":`0`,"s":\'UNSPECIFIED\'},{"v":@,"n":`1`,"s":\'ONE\'},'
    '{"v":@,"n":`2`,"s":`null`},{"v":@,"n":`2`,"s":\'TWO\'},{"v":@,"n":`1`,"s":\'AGAIN\'}]'
    "[?v == n].s | @[0]"
)
# Rows keyed by bools, floats, text and null: JMESPath ``==`` keeps ``true`` apart from ``1``.
ENUM_ODD_KEYS = (
    'matchedToken.value[2].intVal | [{"v":@,"n":`true`,"s":\'YES\'},{"v":@,"n":`1.0`,"s":\'ONE\'},'
    '{"v":@,"n":`false`,"s":\'NO\'},{"v":@,"n":`0`,"s":\'ZERO\'},{"v":@,"n":\'72\',"s":\'TEXT\'},'
    '{"v":@,"n":`null`,"s":\'NULL\'},{"v":@,"n":`{"a": 1}`,"s":\'OBJECT\'}]'
    "[?v == n].s | @[0]"
)
ENUM_FLOAT_KEYS = (
    'matchedToken.value[2].intVal | [{"v":@,"n":`1.0`,"s":\'ONE\'},{"v":@,"n":`0`,"s":\'ZERO\'},'
    '{"v":@,"n":`[1]`,"s":\'LIST\'},{"v":@,"n":`1.5`,"s":\'HALF\'}]'
    "[?v == n].s | @[0]"
)
HR_TYPE = "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm"
CHAINS = [
    "matchedToken.value[0].fpVal",
    "matchedToken.endTimeNanos",
    "matchedToken.value[-1].fpVal",
    "matchedToken",
]


def tokens() -> list[Any]:
    """Ordinary tokens plus every odd value in each place the expressions read."""
    ordinary = {
        "endTimeNanos": T0_NS,
        "a": {"b": 1_700_000_000_123},
        "value": [{"fpVal": 72.0}, {"intVal": 3}, {"intVal": 1}],
    }
    found: list[Any] = [ordinary, *ODD]
    for odd in ODD:
        for place in ("endTimeNanos", "a", "value"):
            found.append({**ordinary, place: odd})
        found.append({**ordinary, "a": {"b": odd}})
        found.append({**ordinary, "value": [{"fpVal": odd}, {"intVal": odd}, {"intVal": odd}]})
        found.append({**ordinary, "value": [odd, odd, odd]})
    found.append({k: v for k, v in ordinary.items() if k != "endTimeNanos"})
    found += [
        {"endTimeNanos": n} for n in (0, -1, 10**18, 253402300800 * 10**9, -62135596800 * 10**9 - 10**6)
    ]
    return found


def same(left: Any, right: Any) -> bool:
    """Equal and of the same type (``1 == 1.0 == True`` must not hide a difference); NaN equals NaN."""
    return type(left) is type(right) and repr(left) == repr(right)


def general(expression: Expression, token: Any) -> Any:
    try:
        return expression.select_one({**WRAPPED, "matchedToken": token})
    except Exception as exc:  # the reader must not claim a value where the general path fails
        return exc


@pytest.mark.parametrize("text", [*TIMESTAMPS, ENUM, ENUM_ODD_KEYS, ENUM_FLOAT_KEYS])
def test_jmespath_token_readers_agree_with_the_general_evaluator(text):
    expression = Expression(text, "JmesPath")
    assert expression.token_reader is not None
    answered = 0
    for token in tokens():
        fast = expression.token_reader(token)
        if fast is UNSURE:
            continue
        answered += 1
        assert same(fast, general(expression, token)), (text, token)
    assert answered >= 5


@pytest.mark.parametrize("text", CHAINS)
def test_jsonpath_token_readers_agree_and_are_never_unsure(text):
    expression = Expression(text, "JsonPath")
    assert expression.token_reader is not None
    for token in tokens():
        assert same(expression.token_reader(token), general(expression, token)), (text, token)


def test_the_timestamp_reader_answers_for_ordinary_integers_and_defers_the_rest():
    reader = Expression(TIMESTAMPS[0], "JmesPath").token_reader
    assert reader is not None
    assert reader({"endTimeNanos": 1700000000123456789}) == DateTimeValue(17000000001240000)
    for odd in (1.5e18, "1700000000123456789", None, True, 10**30, 2**1100):
        assert reader({"endTimeNanos": odd}) is UNSURE


def test_the_enum_reader_skips_null_names_and_takes_the_first_match():
    reader = Expression(ENUM, "JmesPath").token_reader
    assert reader is not None
    assert reader({"value": [{}, {}, {"intVal": 2}]}) == "TWO"
    assert reader({"value": [{}, {}, {"intVal": 1}]}) == "ONE"
    assert general(Expression(ENUM, "JmesPath"), {"value": [{}, {}, {"intVal": True}]}) is reader(
        {"value": [{}, {}, {"intVal": True}]}
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("$.Body.deviceIdentifier", "JsonPath"),
        ("matchedToken.value[*].fpVal", "JsonPath"),
        ("Body.deviceIdentifier", "JmesPath"),
        ("matchedToken.value[0].fpVal", "JmesPath"),
        ("fromUnixTimestampMs(ceil(multiply(Body.t, `0.000001`)))", "JmesPath"),
        ("fromUnixTimestampMs(ceil(multiply(matchedToken.t, matchedToken.f)))", "JmesPath"),
        ("fromUnixTimestampMs(abs(multiply(matchedToken.t, `0.000001`)))", "JmesPath"),
        ("fromUnixTimestampMs(ceil(add(matchedToken.t, `1`)))", "JmesPath"),
        (
            'matchedToken.v | [{"v":@,"n":`0`,"s":\'A\'},{"v":@,"n":`1`,"x":\'B\'}][?v == n].s | @[0]',
            "JmesPath",
        ),
        ('matchedToken.v | [{"v":@,"n":`0`,"s":\'A\'}][?v != n].s | @[0]', "JmesPath"),
        ('matchedToken.v | [{"v":@,"n":`0`,"s":\'A\'}][?v == n].s | @[1]', "JmesPath"),
        ('Body.v | [{"v":@,"n":`0`,"s":\'A\'}][?v == n].s | @[0]', "JmesPath"),
        ('matchedToken.v | [{"v":@,"n":Body.x,"s":\'A\'}][?v == n].s | @[0]', "JmesPath"),
    ],
)
def test_other_shapes_are_not_specialised(text, language):
    assert Expression(text, language).token_reader is None


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


def instant_property_lists(rng: random.Random, names: list[str]) -> list[list[tuple[str, str]]]:
    texts = ["72", "72.50", "-0", "", " ", "abc", "1e400", "True", "03/01/2024 10:00:00"]
    lists: list[list[tuple[str, str]]] = [[], [(n, "1") for n in names], [(n, "x") for n in reversed(names)]]
    for _ in range(30):
        lists.append([(rng.choice(names), rng.choice(texts)) for _ in range(rng.randint(1, 7))])
    return lists


def test_instant_observations_build_what_the_general_group_builder_builds():
    mapping = fixture_json("fhirmapping.json")
    entries = [e["template"] for e in mapping["template"]]
    with_components = next(t for t in entries if t.get("components"))
    both = copy.deepcopy(next(t for t in entries if t.get("value")))
    both["typeName"] = "both"
    both["components"] = copy.deepcopy(with_components["components"])
    mapping["template"].append({"templateType": "CodeValueFhir", "template": both})
    identity = CreateIdentity().resolve("device", "patient", None)
    rng = random.Random(9)

    def attempt(action: Any) -> str:
        try:
            return repr(action())
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    for template in load_fhir_mapping(mapping).templates:
        names = [c.value.value_name for c in template.components] + ["unused"]
        if template.value is not None:
            names.append(template.value.value_name)
        builder = InstantObservations(template, template.type_name, identity, 5)
        for number, properties in enumerate(instant_property_lists(rng, names)):
            m = Measurement(
                template.type_name, "device", 638_000_000_000_000_000 + number, properties=properties
            )
            fast = attempt(lambda: builder.build(m))
            slow = attempt(
                lambda: [
                    build_observation(template, g, identity, 5)
                    for g in build_observation_groups(template, [m])
                ][0]
            )
            assert fast == slow, (template.type_name, properties)


def sampled_heart_rate_mapping() -> dict[str, Any]:
    """The original FHIR mapping with heart rate as hourly SampledData (the general group builder)."""
    mapping = fixture_json("fhirmapping.json")
    for entry in mapping["template"]:
        template = entry["template"]
        if template["typeName"] == HR_TYPE:
            template["periodInterval"] = 60
            template["value"] = {"valueType": "SampledData", "valueName": "bpm", "defaultPeriod": 1000}
    return mapping


def test_instant_observations_refuse_a_sampled_data_template():
    sampled = load_fhir_mapping(sampled_heart_rate_mapping()).find(HR_TYPE)
    assert sampled is not None and sampled.uses_sampled_data
    identity = CreateIdentity().resolve("device", "patient", None)
    with pytest.raises(ValueError, match="SampledData"):
        InstantObservations(sampled, sampled.type_name, identity, 0)


def test_fast_paths_apply_to_every_original_template():
    mapping = load_device_mapping(fixture_text("devicecontent.json"))
    extractor = MeasurementExtractor(mapping)
    assert extractor.plans_used() == len(mapping.templates)
    assert MeasurementExtractor(mapping, fast_paths=False).plans_used() == 0


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


def outcome(converter: Converter, messages: list[Any]) -> tuple[Any, ...]:
    result = converter.convert(messages)
    return (
        repr(result.observations),
        [d.to_dict() for d in result.dead_letters],
        result.patients,
        result.devices,
        repr(result.raw_series),
        (result.messages, result.measurements, result.points_matched),
    )


@pytest.mark.parametrize("style", ["original", "standard", "sampled"])
def test_conversion_with_and_without_fast_paths_is_identical(style):
    device: Any = fixture_text("devicecontent.json")
    fhir: Any = fixture_text("fhirmapping.json")
    identity: Any = CreateIdentity
    if style == "standard":
        device, fhir = generate_templates(fixture_json("dataSources.json"), style="standard")
        identity = lambda: PatientReferenceIdentity({SUB: "patient-1"})  # noqa: E731
    elif style == "sampled":
        fhir = sampled_heart_rate_mapping()
    messages = odd_corpus(seed=11)
    fast = outcome(Converter(device, fhir, identity(), clock=lambda: 0), messages)
    slow = outcome(Converter(device, fhir, identity(), clock=lambda: 0, fast_paths=False), messages)
    assert fast == slow
    observations, dead_letters = fast[0], fast[1]
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
    fast = Converter(device, fhir, CreateIdentity(), clock=lambda: 0).convert([page])
    slow = Converter(device, fhir, CreateIdentity(), clock=lambda: 0, fast_paths=False).convert([page])
    assert fast.observations == slow.observations
    assert [d.to_dict() for d in fast.dead_letters] == [d.to_dict() for d in slow.dead_letters]
    assert [d.reason for d in fast.dead_letters] == [
        "TemplateExpressionException",
        "InvalidQuantityFhirValueException",
    ]


def test_a_value_name_read_twice_keeps_its_first_value_as_in_the_general_path():
    device = fixture_json("devicecontent.json")
    for entry in device["template"]:
        if entry["template"]["typeName"] == HR_TYPE:
            entry["template"]["values"].append(
                {"valueName": "bpm", "valueExpression": "matchedToken.modifiedTimeMillis"}
            )
    fhir = fixture_text("fhirmapping.json")
    page = heart_rate_message([70.0, 71.0])
    fast = Converter(device, fhir, CreateIdentity(), clock=lambda: 0).convert([page])
    slow = Converter(device, fhir, CreateIdentity(), clock=lambda: 0, fast_paths=False).convert([page])
    assert fast.observations == slow.observations
    assert fast.dead_letters == slow.dead_letters == []
    assert [o["valueQuantity"]["value"] for o in fast.observations] == [70, 71]
