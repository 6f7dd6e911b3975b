"""Catch-all templates: every stream of a known data type converts, exact streams still convert once."""

from __future__ import annotations

import copy

from fitonfhir_dagster.fitmapping.template_generation import generate_templates, render_json
from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import CreateIdentity
from tests.medtech.medtech_fitdata import data_sources, message, point, sample_values

HR = "com.google.heart_rate.bpm"
ORPHAN = f"raw:{HR}:407408718192:api_created"  # no package, no device: no exact template names it


def _types(mapping: dict) -> list[str]:
    return [t["template"]["typeName"] for t in mapping["template"]]


def _convert(templates: tuple[dict, dict], messages: list[dict]):
    converter = Converter(*templates, CreateIdentity(), clock=lambda: 0, points_key="point")
    return converter.convert(copy.deepcopy(messages))


def _message_per_source(sources: list[dict]) -> list[dict]:
    out = []
    for i, source in enumerate(sources):
        end = 1_700_000_000_000_000_000 + i * 60_000_000_000
        out.append(message(source, [point(source["dataType"]["name"], end, sample_values(source, i))]))
    return out


def test_one_catch_all_per_data_type_after_every_exact_template_with_its_fhir_template():
    sources = data_sources()
    device, fhir = generate_templates(sources, catch_all=True)
    plain_device, plain_fhir = generate_templates(sources)

    names = _types(device)
    exact = _types(plain_device)
    data_types = list(dict.fromkeys(s["dataType"]["name"] for s in sources))
    assert names == exact + [f"any:{t}" for t in data_types]
    assert _types(fhir) == _types(plain_fhir) + [f"any:{t}" for t in data_types]


def test_the_original_style_stays_byte_for_byte_the_same():
    sources = data_sources()
    with_flag = generate_templates(sources, style="original", catch_all=True)
    assert [render_json(d) for d in with_flag] == [
        render_json(d) for d in generate_templates(sources, style="original")
    ]


def test_a_stream_no_exact_template_names_converts_under_its_data_types_catch_all():
    sources = data_sources()
    hr = next(s for s in sources if s["dataType"]["name"] == HR)
    orphan = dict(hr, dataStreamId=ORPHAN, application=None, device=None)
    messages = [
        message(orphan, [point(HR, 1_700_000_000_000_000_000, sample_values(hr, 0))], device="sub.stream-x")
    ]

    without = _convert(generate_templates(sources), messages)
    with_catch_all = _convert(generate_templates(sources, catch_all=True), messages)

    assert (without.points_in, len(without.unmatched), without.observations) == (1, 1, [])
    assert without.unmatched[0].reason == "TemplateNotFoundException"
    assert (with_catch_all.points_observed, with_catch_all.unmatched) == (1, [])
    (observation,) = with_catch_all.observations
    assert observation["code"]["text"] == f"any:{HR}"
    assert {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"} in observation["code"][
        "coding"
    ]


def test_streams_with_an_exact_template_are_not_matched_again_by_the_catch_all():
    sources = data_sources()
    messages = _message_per_source(sources)

    plain = _convert(generate_templates(sources), messages)
    with_catch_all = _convert(generate_templates(sources, catch_all=True), messages)

    assert with_catch_all.measurements == plain.measurements
    assert with_catch_all.observations == plain.observations
    assert with_catch_all.points_observed == plain.points_observed == len(sources)
