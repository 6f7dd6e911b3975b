"""JMESPath as MedTech evaluates it: the ``jmespath`` engine plus MedTech's custom functions.

MedTech runs JmesPath.Net with ``add``, ``subtract``, ``multiply``, ``divide``, ``pow``, ``insertString``,
``fromUnixTimestamp`` and ``fromUnixTimestampMs``. Their integer semantics matter: two integers give
64-bit integer arithmetic (wrapping like .NET unchecked code, ``divide`` truncates toward zero), a float
on either side gives IEEE double arithmetic, and the timestamp functions accept integers only.
``ceil``/``floor`` return integers so they can feed ``fromUnixTimestampMs``.

Expressions are compiled once into closures for the node kinds the templates use; other node kinds
run through the library's tree interpreter with the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jp_exceptions
from jmespath.functions import Functions, signature
from jmespath.visitor import Options, TreeInterpreter

from fitonfhir_dagster.medtech.timestamps import (
    MAX_TICKS,
    MIN_TICKS,
    TICKS_PER_MS,
    TICKS_PER_SECOND,
    format_period_instant,
)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_PROJECTIONS = {"projection", "value_projection", "filter_projection", "flatten", "slice"}


class JmesPathFunctionError(ValueError):
    """A custom function received a value it cannot use (MedTech stops processing that message)."""


class DateTimeValue:
    """The date-time a ``fromUnixTimestamp*`` call yields (a value, not text), as Unix-epoch ticks."""

    __slots__ = ("ticks",)

    def __init__(self, ticks: int):
        self.ticks = ticks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DateTimeValue) and other.ticks == self.ticks

    def __hash__(self) -> int:
        return hash(self.ticks)

    def __repr__(self) -> str:
        return f"DateTimeValue({format_period_instant(self.ticks)})"


def _wrap64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= (1 << 63) else value


def _is_int(value: Any) -> bool:
    return type(value) is int


def _require_int(name: str, value: Any) -> int:
    if type(value) is not int:
        raise JmesPathFunctionError(f"{name}() needs an integer, got {value!r}")
    return value


def _float_divide(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _from_unix(name: str, value: Any, ticks_per_unit: int) -> DateTimeValue:
    ticks = _require_int(name, value) * ticks_per_unit
    if not MIN_TICKS <= ticks <= MAX_TICKS:
        raise JmesPathFunctionError(f"{name}({value}) is outside the supported date range")
    return DateTimeValue(ticks)


class MedTechFunctions(Functions):
    """JMESPath built-ins plus MedTech's custom functions, with MedTech's integer semantics."""

    @signature({"types": ["number"]}, {"types": ["number"]})
    def _func_add(self, a: Any, b: Any) -> Any:
        return _wrap64(a + b) if _is_int(a) and _is_int(b) else float(a) + float(b)

    @signature({"types": ["number"]}, {"types": ["number"]})
    def _func_subtract(self, a: Any, b: Any) -> Any:
        return _wrap64(a - b) if _is_int(a) and _is_int(b) else float(a) - float(b)

    @signature({"types": ["number"]}, {"types": ["number"]})
    def _func_multiply(self, a: Any, b: Any) -> Any:
        return _wrap64(a * b) if _is_int(a) and _is_int(b) else float(a) * float(b)

    @signature({"types": ["number"]}, {"types": ["number"]})
    def _func_divide(self, a: Any, b: Any) -> Any:
        if _is_int(a) and _is_int(b):
            if b == 0:
                raise JmesPathFunctionError("divide() by integer zero")
            quotient = abs(a) // abs(b)
            result = quotient if (a >= 0) == (b >= 0) else -quotient
            if not _INT64_MIN <= result <= _INT64_MAX:
                raise JmesPathFunctionError("divide() overflows a 64-bit integer")
            return result
        return _float_divide(float(a), float(b))

    @signature({"types": ["number"]}, {"types": ["number"]})
    def _func_pow(self, a: Any, b: Any) -> Any:
        try:
            result = math.pow(float(a), float(b))
        except ValueError:
            result = math.nan
        except OverflowError:
            result = math.inf if float(a) > 0 or float(b) % 2 == 0 else -math.inf
        if _is_int(a) and _is_int(b):
            if math.isnan(result) or math.isinf(result) or not _INT64_MIN <= round(result) <= _INT64_MAX:
                raise JmesPathFunctionError(f"pow({a}, {b}) overflows a 64-bit integer")
            return round(result)
        return result

    @signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["number"]})
    def _func_insertString(self, text: str, insert: str, position: Any) -> str:  # noqa: N802 (MedTech name)
        if not (_is_int(position) or (type(position) is float and position.is_integer())):
            raise JmesPathFunctionError(f"insertString() position must be an integer, got {position!r}")
        index = int(position)
        if not 0 <= index <= len(text):
            raise JmesPathFunctionError(f"insertString() position {index} is outside 0..{len(text)}")
        return text[:index] + insert + text[index:]

    @signature({"types": ["number"]})
    def _func_fromUnixTimestamp(self, value: Any) -> DateTimeValue:  # noqa: N802 (MedTech name)
        return _from_unix("fromUnixTimestamp", value, TICKS_PER_SECOND)

    @signature({"types": ["number"]})
    def _func_fromUnixTimestampMs(self, value: Any) -> DateTimeValue:  # noqa: N802 (MedTech name)
        return _from_unix("fromUnixTimestampMs", value, TICKS_PER_MS)

    @signature({"types": ["number"]})
    def _func_ceil(self, value: Any) -> int:
        if type(value) is float and not math.isfinite(value):
            raise JmesPathFunctionError(f"ceil({value}) has no integer value")
        return math.ceil(value)

    @signature({"types": ["number"]})
    def _func_floor(self, value: Any) -> int:
        if type(value) is float and not math.isfinite(value):
            raise JmesPathFunctionError(f"floor({value}) has no integer value")
        return math.floor(value)


_FUNCTIONS = MedTechFunctions()
_OPTIONS = Options(custom_functions=_FUNCTIONS)
_INTERPRETER = TreeInterpreter(_OPTIONS)
FUNCTION_NAMES = frozenset(_FUNCTIONS.FUNCTION_TABLE)

Compiled = Callable[[Any], Any]


def _number_arg(name: str, value: Any) -> Any:
    kind = type(value)
    if kind is not int and kind is not float:
        raise JmesPathFunctionError(f"{name}() expects a number, got {value!r}")
    return value


_NUMERIC_FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    name: (getattr(_FUNCTIONS, f"_func_{name}"), arity)
    for name, arity in (
        ("add", 2),
        ("subtract", 2),
        ("multiply", 2),
        ("divide", 2),
        ("pow", 2),
        ("ceil", 1),
        ("floor", 1),
        ("fromUnixTimestamp", 1),
        ("fromUnixTimestampMs", 1),
    )
}


def _compile_node(node: dict[str, Any]) -> Compiled:
    kind = node["type"]
    children = node["children"]
    if kind == "field":
        name = node["value"]
        return lambda value: value.get(name) if type(value) is dict else None
    if kind == "current":
        return lambda value: value
    if kind == "literal":
        literal = node["value"]
        return lambda value: literal
    if kind in ("subexpression", "pipe"):
        parts = [_compile_node(child) for child in children]
        if kind == "subexpression":

            def subexpression(value: Any) -> Any:
                for part in parts:
                    value = part(value)
                    if value is None:
                        return None
                return value

            return subexpression

        def pipe(value: Any) -> Any:
            for part in parts:
                value = part(value)
            return value

        return pipe
    if kind == "index_expression" and children[1]["type"] == "index":
        left = _compile_node(children[0])
        index = children[1]["value"]

        def index_expression(value: Any) -> Any:
            found = left(value)
            if type(found) is not list:
                return None
            try:
                return found[index]
            except IndexError:
                return None

        return index_expression
    if kind == "function_expression":
        name = node["value"]
        args = [_compile_node(child) for child in children]
        direct = _NUMERIC_FUNCTIONS.get(name)
        if direct is not None and len(args) == direct[1]:
            # MedTech's numeric functions take numbers only: check here, skip the generic validation.
            function = direct[0]
            if len(args) == 1:
                only = args[0]
                return lambda value: function(_number_arg(name, only(value)))
            return lambda value: function(*[_number_arg(name, arg(value)) for arg in args])
        call = _FUNCTIONS.call_function
        return lambda value: call(name, [arg(value) for arg in args])
    compiled = _compile_collection_node(kind, node, children)
    if compiled is not None:
        return compiled
    return lambda value: _INTERPRETER.visit(node, value)


def _is_false(value: Any) -> bool:
    """JMESPath falsiness: empty string, list or object, null and false (0 is true)."""
    return value is None or value is False or value == "" or value == [] or value == {}


def _compile_collection_node(kind: str, node: dict[str, Any], children: list[Any]) -> Compiled | None:
    """Closures for the node kinds of the enum lookups and projections; None to use the interpreter."""
    if kind == "multi_select_list":
        items = [_compile_node(child) for child in children]
        return lambda value: None if value is None else [item(value) for item in items]
    if kind == "multi_select_dict":
        pairs = [(child["value"], _compile_node(child["children"][0])) for child in children]
        return lambda value: None if value is None else {key: item(value) for key, item in pairs}
    if kind == "comparator" and node["value"] in ("eq", "ne"):
        compare = _INTERPRETER.COMPARATOR_FUNC[node["value"]]
        left, right = _compile_node(children[0]), _compile_node(children[1])
        return lambda value: compare(left(value), right(value))
    if kind in ("projection", "filter_projection"):
        base_of = _compile_node(children[0])
        each = _compile_node(children[1])
        condition = _compile_node(children[2]) if kind == "filter_projection" else None

        def projection(value: Any) -> Any:
            base = base_of(value)
            if type(base) is not list:
                return None
            collected = []
            for element in base:
                if condition is not None and _is_false(condition(element)):
                    continue
                current = each(element)
                if current is not None:
                    collected.append(current)
            return collected

        return projection
    if kind == "identity":
        return lambda value: value
    return None


def _function_names(node: dict[str, Any]) -> list[str]:
    found = [node["value"]] if node["type"] == "function_expression" else []
    for child in node.get("children", []):
        if isinstance(child, dict):
            found.extend(_function_names(child))
    return found


def _is_projection(node: dict[str, Any]) -> bool:
    """Whether JmesPath.Net flags the result as a projection (each element is then a match)."""
    kind = node["type"]
    if kind in _PROJECTIONS:
        return True
    if kind in ("subexpression", "pipe") and node["children"]:
        return _is_projection(node["children"][-1])
    return False


class JmesPathSyntaxError(ValueError):
    """The expression does not compile (or calls an unknown function)."""


class JmesPathExpression:
    """A compiled MedTech JMESPath expression."""

    def __init__(self, text: str):
        try:
            parsed = jmespath.compile(text).parsed
        except jp_exceptions.JMESPathError as exc:
            raise JmesPathSyntaxError(f"invalid JMESPath {text!r}: {exc}") from None
        unknown = sorted(set(_function_names(parsed)) - FUNCTION_NAMES)
        if unknown:
            raise JmesPathSyntaxError(f"invalid JMESPath {text!r}: unknown function {', '.join(unknown)}()")
        self.text = text
        self.is_projection = _is_projection(parsed)
        self._run = _compile_node(parsed)

    def evaluate(self, data: Any) -> Any:
        """The expression's result; function and type errors raise ``JmesPathFunctionError``."""
        try:
            return self._run(data)
        except JmesPathFunctionError:
            raise
        except (jp_exceptions.JMESPathError, TypeError, ValueError, OverflowError) as exc:
            raise JmesPathFunctionError(str(exc)) from None

    def __repr__(self) -> str:
        return f"JmesPathExpression({self.text!r})"
