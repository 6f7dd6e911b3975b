"""Per-point accounting: each point ends in an Observation, a dead letter or a "no template matched" record."""

from __future__ import annotations

from fitonfhir_dagster.medtech.converter import Converter
from fitonfhir_dagster.medtech.identity import CreateIdentity
from tests.medtech.medtech_fitdata import fixture_text, heart_rate_message, point

T0 = 1_700_000_000_000_000_000


def test_every_point_is_observed_dead_lettered_or_unmatched():
    msg = heart_rate_message([71.0, 72.0])
    msg["point"][1]["value"] = []  # the required bpm is missing: that match fails
    msg["point"].append(point("com.example.unknown", T0, []))  # no template has this data type
    converter = Converter(
        fixture_text("devicecontent.json"),
        fixture_text("fhirmapping.json"),
        CreateIdentity(),
        clock=lambda: 0,
        points_key="point",
    )

    result = converter.convert([msg])

    assert (result.points_in, result.points_observed, result.points_dead_lettered) == (3, 1, 1)
    (unmatched,) = result.unmatched
    assert unmatched.reason == "TemplateNotFoundException"
    assert unmatched.error.startswith("no template matched point[2] (dataTypeName 'com.example.unknown')")
    assert (unmatched.message_index, unmatched.detail) == (0, "point[2]")
    assert result.points_unaccounted == 0
    assert [d.reason for d in result.dead_letters] == ["IncompatibleDataException"]


def test_without_points_key_nothing_is_counted_as_medtech_does():
    converter = Converter(
        fixture_text("devicecontent.json"), fixture_text("fhirmapping.json"), CreateIdentity()
    )
    result = converter.convert([heart_rate_message([71.0])])
    assert (result.points_in, result.unmatched, len(result.observations)) == (0, [], 1)
