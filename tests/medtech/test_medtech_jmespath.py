"""MedTech's JMESPath functions with their integer semantics, and match splitting by projection."""

from __future__ import annotations

import math

import pytest

from fitonfhir_dagster.medtech.device_templates import Expression, ExpressionError
from fitonfhir_dagster.medtech.jmespath_functions import (
    DateTimeValue,
    JmesPathExpression,
    JmesPathFunctionError,
    JmesPathSyntaxError,
)
from fitonfhir_dagster.medtech.timestamps import format_period_instant


def run(expr: str, data=None):
    return JmesPathExpression(expr).evaluate(data if data is not None else {})


def test_integer_arithmetic_stays_integer_and_wraps_like_dotnet_unchecked():
    assert run("add(`2`, `3`)") == 5 and type(run("add(`2`, `3`)")) is int
    assert run("add(`9223372036854775807`, `1`)") == -9223372036854775808
    assert run("multiply(`4611686018427387904`, `2`)") == -9223372036854775808
    assert run("subtract(`1`, `3`)") == -2


def test_a_float_on_either_side_gives_float_arithmetic():
    assert run("add(`2`, `0.5`)") == 2.5
    assert run("multiply(`3`, `0.5`)") == 1.5


def test_integer_division_truncates_toward_zero_and_fails_on_zero():
    assert run("divide(`40`, `50`)") == 0
    assert run("divide(`-7`, `2`)") == -3
    assert run("divide(`7.0`, `2`)") == 3.5
    with pytest.raises(JmesPathFunctionError, match="zero"):
        run("divide(`1`, `0`)")
    assert run("divide(`1.0`, `0`)") == math.inf
    assert run("divide(`-1`, `0.0`)") == -math.inf


def test_pow_of_integers_is_an_integer_and_overflow_is_an_error():
    assert run("pow(`2`, `10`)") == 1024 and type(run("pow(`2`, `10`)")) is int
    assert run("pow(`2.0`, `0.5`)") == pytest.approx(math.sqrt(2))
    with pytest.raises(JmesPathFunctionError, match="overflow"):
        run("pow(`10`, `30`)")


def test_insert_string_inserts_at_a_zero_based_position_and_rejects_out_of_range():
    assert run("insertString('abcd', '-', `2`)") == "ab-cd"
    with pytest.raises(JmesPathFunctionError, match="outside"):
        run("insertString('abcd', '-', `5`)")


def test_fit_timestamp_expression_rounds_nanoseconds_up_to_the_next_millisecond():
    expr = "fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `0.000001`)))"
    result = run(expr, {"matchedToken": {"endTimeNanos": 1700000000123456789}})
    assert isinstance(result, DateTimeValue)
    assert format_period_instant(result.ticks) == "2023-11-14T22:13:20.1240000Z"
    assert (
        format_period_instant(run("fromUnixTimestamp(`1700000000`)").ticks) == "2023-11-14T22:13:20.0000000Z"
    )


def test_timestamp_functions_reject_floats_and_strings():
    with pytest.raises(JmesPathFunctionError, match="integer"):
        run("fromUnixTimestampMs(`1700000000000.5`)")
    with pytest.raises(JmesPathFunctionError, match="number"):
        run("fromUnixTimestampMs(x)", {"x": "1700000000000"})


def test_ceil_and_floor_return_integers():
    assert run("ceil(`1.2`)") == 2 and type(run("ceil(`1.2`)")) is int
    assert run("floor(`-1.2`)") == -2


def test_fit_enum_lookup_maps_in_range_values_and_gives_null_otherwise():
    expr = (
        'matchedToken.value[0].intVal | [{"v":@,"n":`0`,"s":\'UNSPECIFIED\'},'
        '{"v":@,"n":`1`,"s":\'BODY_POSITION_STANDING\'}][?v == n].s | @[0]'
    )
    assert run(expr, {"matchedToken": {"value": [{"intVal": 1}]}}) == "BODY_POSITION_STANDING"
    assert run(expr, {"matchedToken": {"value": [{"intVal": 7}]}}) is None
    assert run(expr, {"matchedToken": {"value": [{"intVal": None}]}}) is None


def test_unknown_functions_and_bad_syntax_fail_at_compile_time():
    with pytest.raises(JmesPathSyntaxError, match="unknown function"):
        JmesPathExpression("fromUnixTimestampNs(x)")
    with pytest.raises(JmesPathSyntaxError, match="invalid JMESPath"):
        JmesPathExpression("a[?")


def test_a_projection_yields_one_match_per_element_and_a_plain_array_one_match():
    data = {"Body": {"items": [{"a": 1}, {"a": 2}]}}
    assert Expression("Body.items[*]", "JmesPath").select(data) == [{"a": 1}, {"a": 2}]
    assert Expression("Body.items[?a > `1`]", "JmesPath").select(data) == [{"a": 2}]
    assert Expression("Body.items", "JmesPath").select(data) == [[{"a": 1}, {"a": 2}]]
    assert Expression("Body.items[*] | @[0]", "JmesPath").select(data) == [{"a": 1}]
    assert Expression("Body.missing", "JmesPath").select(data) == []


def test_a_single_value_projection_with_several_results_is_an_error():
    data = {"items": [{"a": 1}, {"a": 2}]}
    assert Expression("items[?a == `2`].a", "JmesPath").select_one(data) == 2
    with pytest.raises(ExpressionError, match="Multiple tokens"):
        Expression("items[*].a", "JmesPath").select_one(data)
