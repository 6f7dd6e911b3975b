"""Direct readers of the matched token for the expression shapes templates use most (a speed-up only).

A CalculatedContent expression sees ``{**message, "matchedToken": token}``, yet the common ones read
the token only: ``matchedToken.value[0].fpVal`` (JSONPath), the timestamp
``fromUnixTimestampMs(ceil(multiply(matchedToken.endTimeNanos, `0.000001`)))`` and the enum lookup
``matchedToken.value[2].intVal | [{"v":@,"n":`0`,"s":'A'}, ...][?v == n].s | @[0]`` (JMESPath).
At template load these shapes become plain functions of the token. A reader returns what
``Expression.select_one`` returns on the full scope, or ``UNSURE`` outside the ordinary case; the
caller then runs the general evaluator, so errors and edge cases stay exactly the general path's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fitonfhir_dagster.medtech.jmespath_functions import (
    DateTimeValue,
    JmesPathFunctionError,
    compile_node,
    jmespath_equals,
    numeric_function,
)
from fitonfhir_dagster.medtech.jsonpath import MISSING, follow
from fitonfhir_dagster.medtech.timestamps import MAX_TICKS, MIN_TICKS, TICKS_PER_MS, TICKS_PER_SECOND

UNSURE: Any = object()
TOKEN = "matchedToken"

# Integers this far from 0 convert to float without OverflowError (the general path's error case).
_FLOAT_SAFE = 2**1000
TokenReader = Callable[[Any], Any]
Node = dict[str, Any]


def jsonpath_token_reader(steps: tuple[str | int, ...] | None) -> TokenReader | None:
    """``matchedToken.a[0].b``: the same ``follow`` walk, started at the token (never ``UNSURE``)."""
    if not steps or steps[0] != TOKEN:
        return None
    rest = steps[1:]
    if len(rest) == 3 and type(rest[0]) is str and type(rest[1]) is int and type(rest[2]) is str:
        return _name_index_name(rest[0], rest[1], rest[2])
    return lambda token: follow(token, rest)


def _name_index_name(name: str, index: int, inner: str) -> TokenReader:
    """``follow(token, (name, index, inner))`` unrolled: the shape of ``matchedToken.value[0].fpVal``."""

    def read(token: Any) -> Any:
        if type(token) is dict:
            node = token.get(name, MISSING)
            if type(node) is list and 0 <= index < len(node):
                node = node[index]
                if type(node) is dict:
                    return node.get(inner, MISSING)
        return MISSING

    return read


def jmespath_token_reader(parsed: Node) -> TokenReader | None:
    """A reader for the timestamp or enum-lookup shape, None for any other expression."""
    return _timestamp_reader(parsed) or _enum_reader(parsed)


def _token_path(node: Node) -> Callable[[Any], Any] | None:
    """``matchedToken.x[1].y`` as a function of the token: the chain after ``matchedToken``."""
    if node["type"] == "field" and node["value"] == TOKEN:
        return lambda token: token
    children = node["children"]
    if node["type"] != "subexpression" or not _is_field(children[0], TOKEN):
        return None
    if not all(_is_plain_step(child) for child in children[1:]):
        return None
    rest = children[1:]
    return compile_node(rest[0] if len(rest) == 1 else {"type": "subexpression", "children": rest})


def _is_field(node: Node, name: str | None = None) -> bool:
    return node["type"] == "field" and (name is None or node["value"] == name)


def _is_plain_step(node: Node) -> bool:
    """A field, or a field with one index (``value[2]``)."""
    if _is_field(node):
        return True
    children = node["children"]
    return node["type"] == "index_expression" and _is_field(children[0]) and children[1]["type"] == "index"


def _is_call(node: Node, names: tuple[str, ...], arity: int) -> bool:
    return node["type"] == "function_expression" and node["value"] in names and len(node["children"]) == arity


def _timestamp_reader(node: Node) -> TokenReader | None:
    """``fromUnixTimestamp[Ms](ceil|floor(multiply(<token path>, `number`)))`` for integer inputs."""
    if not _is_call(node, ("fromUnixTimestamp", "fromUnixTimestampMs"), 1):
        return None
    rounding = node["children"][0]
    if not _is_call(rounding, ("ceil", "floor"), 1):
        return None
    product = rounding["children"][0]
    if not _is_call(product, ("multiply",), 2):
        return None
    path_node, factor_node = product["children"]
    path = _token_path(path_node)
    factor = factor_node.get("value")
    if path is None or factor_node["type"] != "literal" or type(factor) not in (int, float):
        return None
    if type(factor) is float:
        return _float_timestamp_reader(path, factor, rounding["value"], node["value"])
    to_date = numeric_function(node["value"])
    round_ = numeric_function(rounding["value"])
    multiply = numeric_function("multiply")

    def read(token: Any) -> Any:
        value = path(token)
        if type(value) is not int:
            return UNSURE
        try:
            return to_date(round_(multiply(value, factor)))
        except (JmesPathFunctionError, ValueError, OverflowError):
            return UNSURE

    return read


def _float_timestamp_reader(
    path: Callable[[Any], Any], factor: float, rounding: str, to_date: str
) -> TokenReader:
    """The fit-on-fhir form (a float factor) inlined: ``multiply`` of an integer and a float is
    ``float(a) * b``, ``ceil``/``floor`` need a finite result, the date must be in .NET's range."""
    round_ = math.ceil if rounding == "ceil" else math.floor
    unit = TICKS_PER_MS if to_date == "fromUnixTimestampMs" else TICKS_PER_SECOND

    def read(token: Any) -> Any:
        value = path(token)
        if type(value) is not int or not -_FLOAT_SAFE < value < _FLOAT_SAFE:
            return UNSURE
        product = float(value) * factor
        if not math.isfinite(product):
            return UNSURE
        ticks = round_(product) * unit
        return DateTimeValue(ticks) if MIN_TICKS <= ticks <= MAX_TICKS else UNSURE

    return read


def _enum_reader(node: Node) -> TokenReader | None:
    """``<token path> | [{v: @, n: `n`, s: 's'}, ...][?v == n].s | @[0]``: the first ``s`` whose ``n`` equals."""
    if node["type"] != "pipe" or len(node["children"]) != 2:
        return None
    inner, first = node["children"]
    if not (
        first["type"] == "index_expression"
        and first["children"][0]["type"] == "current"
        and first["children"][1]["type"] == "index"
        and first["children"][1]["value"] == 0
    ):
        return None
    if inner["type"] != "pipe" or len(inner["children"]) != 2:
        return None
    path = _token_path(inner["children"][0])
    projection = inner["children"][1]
    if path is None or projection["type"] != "filter_projection":
        return None
    base, each, condition = projection["children"]
    if base["type"] != "multi_select_list" or not _is_field(each) or condition["type"] != "comparator":
        return None
    if condition["value"] != "eq" or not all(_is_field(side) for side in condition["children"]):
        return None
    keys = (condition["children"][0]["value"], condition["children"][1]["value"], each["value"])
    table = [_enum_row(row, *keys) for row in base["children"]]
    if len(set(keys)) != 3 or any(row is None for row in table):
        return None
    rows = [row for row in table if row is not None and row[1] is not None]
    # JMESPath ``==`` is Python ``==`` unless one side is a bool (``0``/``1`` never equal ``false``/``true``).
    plain = not any(type(number) is bool for number, _ in rows)

    def read(token: Any) -> Any:
        value = path(token)
        if value is None:
            return MISSING
        if plain and type(value) is not bool:
            for number, name in rows:
                if value == number:
                    return name
            return MISSING
        for number, name in rows:
            if jmespath_equals(value, number):
                return name
        return MISSING

    return read


def _enum_row(row: Node, value_key: str, number_key: str, name_key: str) -> tuple[Any, Any] | None:
    """``{"v": @, "n": `1`, "s": 'NAME'}`` as ``(1, "NAME")``; None for any other object."""
    if row["type"] != "multi_select_dict" or len(row["children"]) != 3:
        return None
    parts = {pair["value"]: pair["children"][0] for pair in row["children"]}
    if set(parts) != {value_key, number_key, name_key} or parts[value_key]["type"] != "current":
        return None
    if parts[number_key]["type"] != "literal" or parts[name_key]["type"] != "literal":
        return None
    return parts[number_key]["value"], parts[name_key]["value"]
