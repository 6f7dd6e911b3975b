"""The Json.NET SelectToken dialect the MedTech templates rely on."""

from __future__ import annotations

import pytest

from fitonfhir_dagster.medtech.jsonpath import (
    MISSING,
    JsonPathMultipleTokensError,
    JsonPathSyntaxError,
    compile_jsonpath,
)

WRAPPED = {
    "Body": {
        "dataSourceId": "derived:com.google.heart_rate.bpm:com.google.android.gms:merge_heart_rate_bpm",
        "deviceIdentifier": "sub.com.google.android.gms",
        "point": [
            {"dataTypeName": "com.google.heart_rate.bpm", "n": 1, "value": [{"fpVal": 70.0}]},
            {"dataTypeName": "com.google.step_count.delta", "n": 2, "value": [{"intVal": 5}]},
            {"dataTypeName": "com.google.heart_rate.bpm", "n": 3, "value": [{"fpVal": 71.5}]},
        ],
    },
    "Properties": {},
    "SystemProperties": {"iothub-connection-device-id": "dev-1"},
}


def select(path: str, data=WRAPPED):
    return compile_jsonpath(path).select(data)


def test_fit_on_fhir_type_match_returns_each_point_of_the_type_in_document_order():
    found = select(
        "$..[?(@dataTypeName == 'com.google.heart_rate.bpm' && $.Body.dataSourceId =~ /derived/"
        " && $.Body.dataSourceId =~ /com.google.android.gms/ && $.Body.dataSourceId =~ /merge_heart_rate_bpm/)]"
    )
    assert [p["n"] for p in found] == [1, 3]


def test_regex_is_a_substring_search_and_an_unescaped_dot_matches_any_character():
    assert len(select("$..[?(@dataTypeName && $.Body.dataSourceId =~ /heart_rate.bpm/)]")) == 3
    assert len(select("$..[?(@dataTypeName && $.Body.dataSourceId =~ /heart_rateXbpm/)]")) == 0
    data = {"Body": {"id": "comXgoogle", "p": [{"t": 1}]}}
    assert len(select("$..[?(@t && $.Body.id =~ /com.google/)]", data)) == 1
    assert len(select("$..[?(@t && $.Body.id =~ /COM.GOOGLE/i)]", data)) == 1


def test_a_false_root_condition_matches_nothing():
    assert (
        select("$..[?(@dataTypeName == 'com.google.heart_rate.bpm' && $.Body.dataSourceId =~ /raw/)]") == []
    )


def test_existence_test_is_true_for_null_zero_and_empty_values():
    data = {"Body": [{"a": None}, {"a": 0}, {"a": ""}, {"b": 1}]}
    assert select("$..[?(@a)]", data) == [{"a": None}, {"a": 0}, {"a": ""}]


def test_recursive_filter_includes_the_root_and_visits_depth_first():
    data = {"x": 1, "child": {"x": 2, "deeper": [{"x": 3}]}, "later": {"x": 4}}
    assert [n["x"] for n in select("$..[?(@x)]", data)] == [1, 2, 3, 4]


def test_equality_compares_numbers_numerically_and_never_a_string_with_a_number():
    data = {"items": [{"v": 1}, {"v": 1.0}, {"v": "1"}, {"v": 2}]}
    assert select("$.items[?(@.v == 1)]", data) == [{"v": 1}, {"v": 1.0}]
    assert select("$.items[?(@.v == '1')]", data) == [{"v": "1"}]
    assert select("$.items[?(@.v != 1)]", data) == [{"v": "1"}, {"v": 2}]
    assert select("$.items[?(@.v > 1)]", data) == [{"v": 2}]
    assert select("$.items[?(@.v == 2 || @.v == '1')]", data) == [{"v": "1"}, {"v": 2}]


def test_non_recursive_filter_tests_array_elements_and_matches_nothing_on_an_object():
    assert [p["n"] for p in select("$.Body.point[?(@.n >= 2)]")] == [2, 3]
    assert select("$.Body[?(@.point)]") == []


def test_paths_names_indexes_wildcards_and_bare_relative_start():
    assert select("$.SystemProperties.iothub-connection-device-id") == ["dev-1"]
    assert select("$['Body']['deviceIdentifier']") == ["sub.com.google.android.gms"]
    assert select("Body.point[2].value[0].fpVal") == [71.5]
    assert select("$.Body.point[*].n") == [1, 2, 3]
    assert select("$.Body.point[0:2].n") == [1, 2]
    assert select("$..fpVal") == [70.0, 71.5]
    assert select("$.Body.point[7].n") == []


def test_select_one_distinguishes_missing_null_and_several_tokens():
    assert compile_jsonpath("$.Body.point[0].n").select_one(WRAPPED) == 1
    assert compile_jsonpath("$.Body.nothing").select_one(WRAPPED) is MISSING
    assert compile_jsonpath("$.a").select_one({"a": None}) is None
    with pytest.raises(JsonPathMultipleTokensError, match="multiple tokens"):
        compile_jsonpath("$..fpVal").select_one(WRAPPED)


@pytest.mark.parametrize(
    "bad",
    ["", "$..[?(@a == 'x')", "$.a[?(@a =~ 'notregex')]", "$.a[abc]", "$.a[?(@a =~ /(/)]", "$.a[?(@a == )]"],
)
def test_syntax_errors_are_raised_at_compile_time_with_the_position(bad):
    with pytest.raises(JsonPathSyntaxError, match="invalid JSONPath"):
        compile_jsonpath(bad)


def test_the_per_message_index_gives_the_same_matches_as_a_full_scan():
    nested = {
        "Body": {
            "dataTypeName": "a",
            "x": [{"dataTypeName": "a", "y": {"dataTypeName": "a"}}, {"dataTypeName": 1}],
        }
    }
    for path in (
        "$..[?(@dataTypeName == 'a')]",
        "$..[?(@dataTypeName == 'com.google.heart_rate.bpm' && $.Body.dataSourceId =~ /gms/)]",
        "$..[?(@dataTypeName == 'com.google.step_count.delta')]",
    ):
        compiled = compile_jsonpath(path)
        for data in (WRAPPED, nested):
            cache: dict = {}
            indexed = compiled.select(data, cache)
            assert [id(n) for n in indexed] == [id(n) for n in compiled.select(data)]
            assert [id(n) for n in compiled.select(data, cache)] == [id(n) for n in indexed]
    assert len(compile_jsonpath("$..[?(@dataTypeName == 'a')]").select(nested, {})) == 3
