"""JSONPath as Newtonsoft Json.NET ``SelectToken(s)`` evaluates it, for the subset MedTech templates use.

Off-the-shelf Python libraries differ from Json.NET on exactly the forms the templates rely on
(``$..[?(@name == 'x' && $.Body.id =~ /re/)]``, ``@name`` without a dot, ``=~`` as a regex *search*),
so this is a small compiler: a path is parsed once into closures and evaluated many times.

Semantics kept from Json.NET: ``$`` inside a filter is the query root; a bare name starts a relative
path; ``..[?()]`` tests every node of the subtree, the start node included, in document order; an
existence test is true whatever the value; ``==`` compares numbers numerically and never equals a
string to a number; a single-value select that finds several tokens is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MISSING: Any = object()

Step = Callable[[list[Any], Any], list[Any]]
Predicate = Callable[[Any, Any], bool]


class JsonPathSyntaxError(ValueError):
    """The expression is not valid JSONPath; ``position`` is the offending character index."""

    def __init__(self, expression: str, position: int, problem: str) -> None:
        super().__init__(f"invalid JSONPath {expression!r} at character {position}: {problem}")
        self.expression = expression
        self.position = position


class JsonPathMultipleTokensError(ValueError):
    """A single-value select found more than one token (Json.NET: "Path returned multiple tokens.")."""


def _children(node: Any) -> Iterator[Any]:
    if type(node) is dict:
        yield from node.values()
    elif type(node) is list:
        yield from node


def _descendants_and_self(node: Any) -> Iterator[Any]:
    """Pre-order document order, the node itself first (Json.NET ``DescendantsAndSelf``)."""
    stack = [node]
    pop = stack.pop
    push = stack.extend
    while stack:
        current = pop()
        yield current
        kind = type(current)
        if kind is dict:
            if current:
                push(reversed(list(current.values())))
        elif kind is list and current:
            push(reversed(current))


def _descendants(node: Any) -> Iterator[Any]:
    it = _descendants_and_self(node)
    next(it)
    return it


# ----------------------------------------------------------------------------- value comparison


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _equals(left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _compare(left: Any, right: Any) -> int | None:
    if _is_number(left) and _is_number(right):
        return (left > right) - (left < right)
    if type(left) is str and type(right) is str:
        return (left > right) - (left < right)
    return None


def _is_scalar(value: Any) -> bool:
    return type(value) not in (dict, list)


def _match_values(op: str, left: Any, right: Any) -> bool:
    if not (_is_scalar(left) and _is_scalar(right)):
        return op in ("!=", "!==")
    if op == "==":
        return _equals(left, right)
    if op == "!=":
        return not _equals(left, right)
    if op == "===":
        return type(left) is type(right) and left == right
    if op == "!==":
        return not (type(left) is type(right) and left == right)
    if op == "=~":
        return type(left) is str and isinstance(right, re.Pattern) and right.search(left) is not None
    order = _compare(left, right)
    if order is None:
        return False
    return {"<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[op]


# ----------------------------------------------------------------------------- parser


_NAME_STOP_PATH = set(".[]()")
_NAME_STOP_FILTER = set(".[]() =<>!&|,\t\r\n")
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": 0}


class _Operand:
    """One side of a filter comparison: a literal or a path from ``@`` (current) or ``$`` (root)."""

    def __init__(self, literal: Any = MISSING, path: JsonPath | None = None, from_root: bool = False):
        self.literal = literal
        self.path = path
        self.from_root = from_root

    @property
    def uses_current(self) -> bool:
        return self.path is not None and not self.from_root

    def values(self, root: Any, current: Any) -> list[Any]:
        if self.path is None:
            return [self.literal]
        return self.path.select_from(root if self.from_root else current, root)


class _Filter:
    """A filter expression tree compiled to a predicate ``(root, current) -> bool``."""

    def __init__(self, predicate: Predicate, uses_current: bool, field_key: tuple[str, str] | None = None):
        self.predicate = predicate
        self.uses_current = uses_current
        # (name, text) when the filter is exactly ``@name == 'text'``: scans can then use an index.
        self.field_key = field_key


def _comparison(left: _Operand, op: str | None, right: _Operand | None) -> _Filter:
    if op is None:
        if left.path is None:
            value = left.literal
            return _Filter(lambda root, cur: value is not None and value is not False, False)
        return _Filter(lambda root, cur: bool(left.values(root, cur)), left.uses_current)
    assert right is not None
    uses_current = left.uses_current or right.uses_current
    # Fast path: ``@name <op> literal`` (one field of the current node), the shape templates use.
    steps = left.path.simple_fields if left.path is not None and not left.from_root else None
    if steps is not None and len(steps) == 1 and right.path is None:
        name, literal = steps[0], right.literal
        if op == "==" and type(literal) is str:

            def field_equals(root: Any, cur: Any) -> bool:
                return type(cur) is dict and cur.get(name, MISSING) == literal and type(cur[name]) is str

            return _Filter(field_equals, True, (name, literal))

        def field_matches(root: Any, cur: Any) -> bool:
            if type(cur) is not dict:
                return False
            found = cur.get(name, MISSING)
            return found is not MISSING and _match_values(op, found, literal)

        return _Filter(field_matches, True)

    def compare(root: Any, cur: Any) -> bool:
        lefts = left.values(root, cur)
        if not lefts:
            return False
        rights = right.values(root, cur)
        return any(_match_values(op, lv, rv) for lv in lefts for rv in rights)

    return _Filter(compare, uses_current)


def _and(terms: list[_Filter]) -> _Filter:
    if len(terms) == 1:
        return terms[0]
    predicates = [t.predicate for t in terms]
    return _Filter(
        lambda root, cur: all(p(root, cur) for p in predicates), any(t.uses_current for t in terms)
    )


def _or(terms: list[_Filter]) -> _Filter:
    predicates = [t.predicate for t in terms]
    return _Filter(
        lambda root, cur: any(p(root, cur) for p in predicates), any(t.uses_current for t in terms)
    )


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def error(self, problem: str) -> JsonPathSyntaxError:
        return JsonPathSyntaxError(self.text, self.pos, problem)

    def peek(self, count: int = 1) -> str:
        return self.text[self.pos : self.pos + count]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_space(self) -> None:
        while not self.at_end() and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    # -- paths

    def parse_path(self, in_filter: bool) -> tuple[list[Step], list[Any] | None]:
        """Steps of a path starting at the current position; also the plain field/index chain if any."""
        steps: list[Step] = []
        simple: list[Any] | None = []
        stop = _NAME_STOP_FILTER if in_filter else _NAME_STOP_PATH
        first = True
        while not self.at_end():
            ch = self.text[self.pos]
            if ch == ".":
                if self.peek(2) == "..":
                    self.pos += 2
                    simple = None
                    steps.append(self.parse_scan(stop))
                    first = False
                    continue
                self.pos += 1
                if self.peek() == "*":
                    self.pos += 1
                    steps.append(_wildcard)
                    simple = None
                else:
                    name = self.parse_name(stop)
                    steps.append(_field(name))
                    if simple is not None:
                        simple.append(name)
            elif ch == "[":
                step, plain = self.parse_bracket()
                steps.append(step)
                if simple is not None and plain is not MISSING:
                    simple.append(plain)
                else:
                    simple = None
            elif in_filter and ch in stop:
                break
            elif ch in "])":
                raise self.error(f"unexpected {ch!r}")
            elif first:
                name = self.parse_name(stop)
                steps.append(_field(name))
                if simple is not None:
                    simple.append(name)
            else:
                raise self.error(f"unexpected {ch!r}")
            first = False
        return steps, simple

    def parse_name(self, stop: set[str]) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] not in stop:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a property name")
        return self.text[start : self.pos]

    def parse_scan(self, stop: set[str]) -> Step:
        ch = self.peek()
        if ch == "[":
            if self.peek(2) == "[?":
                predicate = self.parse_filter_bracket()
                return _scan_filter(predicate)
            step, _ = self.parse_bracket()
            return _scan_then(step)
        if ch == "*":
            self.pos += 1
            return _scan_all
        return _scan_name(self.parse_name(stop))

    def parse_bracket(self) -> tuple[Step, Any]:
        """``[...]`` after a path; returns the step and, for a plain name or index, that key."""
        if self.peek(2) == "[?":
            predicate = self.parse_filter_bracket()
            return _filter_step(predicate), MISSING
        self.pos += 1
        self.skip_space()
        ch = self.peek()
        if ch == "*":
            self.pos += 1
            self.expect("]")
            return _wildcard, MISSING
        if ch in ("'", '"'):
            names = [self.parse_string()]
            self.skip_space()
            while self.peek() == ",":
                self.pos += 1
                self.skip_space()
                names.append(self.parse_string())
                self.skip_space()
            self.expect("]")
            if len(names) == 1:
                return _field(names[0]), names[0]
            return _fields(names), MISSING
        if ch == "(":
            raise self.error("script expressions '[(...)]' are not supported")
        text_start = self.pos
        while not self.at_end() and self.text[self.pos] != "]":
            self.pos += 1
        if self.at_end():
            raise self.error("missing ']'")
        body = self.text[text_start : self.pos].strip()
        self.pos += 1
        if ":" in body:
            parts = [p.strip() for p in body.split(":")]
            if len(parts) > 3:
                raise self.error(f"bad slice {body!r}")
            try:
                bounds = [int(p) if p else None for p in parts]
            except ValueError:
                raise self.error(f"bad slice {body!r}") from None
            if len(bounds) == 3 and bounds[2] == 0:
                raise self.error("slice step cannot be 0")
            return _slice(slice(*bounds)), MISSING
        try:
            indexes = [int(p.strip()) for p in body.split(",")]
        except ValueError:
            raise self.error(f"bad array index {body!r}") from None
        if len(indexes) == 1:
            return _index(indexes[0]), indexes[0]
        return _indexes(indexes), MISSING

    def expect(self, token: str) -> None:
        self.skip_space()
        if self.peek(len(token)) != token:
            raise self.error(f"expected {token!r}")
        self.pos += len(token)

    def parse_string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(nxt, nxt))
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.error("unterminated string")

    # -- filters

    def parse_filter_bracket(self) -> _Filter:
        self.pos += 2  # "[?"
        self.expect("(")
        result = self.parse_or()
        self.expect(")")
        self.expect("]")
        return result

    def parse_or(self) -> _Filter:
        terms = [self.parse_and()]
        while True:
            self.skip_space()
            if self.peek(2) != "||":
                break
            self.pos += 2
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else _or(terms)

    def parse_and(self) -> _Filter:
        terms = [self.parse_unary()]
        while True:
            self.skip_space()
            if self.peek(2) != "&&":
                break
            self.pos += 2
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else _HoistableAnd(terms)

    def parse_unary(self) -> _Filter:
        self.skip_space()
        if self.peek() == "(":
            self.pos += 1
            inner = self.parse_or()
            self.expect(")")
            return inner
        left = self.parse_operand()
        self.skip_space()
        for op in ("===", "!==", "==", "!=", "<=", ">=", "=~", "<", ">"):
            if self.peek(len(op)) == op:
                self.pos += len(op)
                right = self.parse_operand()
                if op == "=~" and not (right.path is None and isinstance(right.literal, re.Pattern)):
                    raise self.error("'=~' needs a /regex/ on its right")
                return _comparison(left, op, right)
        return _comparison(left, None, None)

    def parse_operand(self) -> _Operand:
        self.skip_space()
        if self.at_end():
            raise self.error("expected a value or a path")
        ch = self.text[self.pos]
        if ch in "@$":
            self.pos += 1
            steps, simple = self.parse_path(in_filter=True)
            return _Operand(path=JsonPath(self.text, steps, simple), from_root=ch == "$")
        if ch in ("'", '"'):
            return _Operand(literal=self.parse_string())
        if ch == "/":
            return _Operand(literal=self.parse_regex())
        match = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null").match(self.text, self.pos)
        if not match:
            raise self.error("expected a value or a path")
        self.pos = match.end()
        word = match.group(0)
        if word in ("true", "false", "null"):
            return _Operand(literal={"true": True, "false": False, "null": None}[word])
        number: int | float = float(word) if match.group(1) or match.group(2) else int(word)
        return _Operand(literal=number)

    def parse_regex(self) -> re.Pattern[str]:
        start = self.pos
        self.pos += 1
        while not self.at_end() and self.text[self.pos] != "/":
            self.pos += 2 if self.text[self.pos] == "\\" else 1
        if self.at_end():
            raise self.error("unterminated /regex/")
        pattern = self.text[start + 1 : self.pos]
        self.pos += 1
        flags = 0
        while not self.at_end() and self.text[self.pos].isalpha():
            flag = self.text[self.pos]
            if flag not in _REGEX_FLAGS:
                raise self.error(f"unknown regex flag {flag!r}")
            flags |= _REGEX_FLAGS[flag]
            self.pos += 1
        try:
            return re.compile(pattern, flags)
        except re.error as exc:
            raise JsonPathSyntaxError(self.text, start, f"bad regex: {exc}") from None


class _HoistableAnd(_Filter):
    """An ``&&`` chain whose root-only terms can be decided once per filter run instead of per node."""

    def __init__(self, terms: list[_Filter]):
        combined = _and(terms)
        super().__init__(combined.predicate, combined.uses_current)
        self.root_terms = [t.predicate for t in terms if not t.uses_current]
        current_terms = [t for t in terms if t.uses_current]
        self.current_filter = _and(current_terms) if current_terms else None
        self.current_only = self.current_filter.predicate if self.current_filter else None


def _prepare(predicate: _Filter, root: Any) -> Predicate | None:
    """The per-node predicate for one filter run, or None when no node can match (root terms false)."""
    if isinstance(predicate, _HoistableAnd):
        for term in predicate.root_terms:
            if not term(root, root):
                return None
        return predicate.current_only or (lambda r, c: True)
    if not predicate.uses_current:
        return (lambda r, c: True) if predicate.predicate(root, root) else None
    return predicate.predicate


# ----------------------------------------------------------------------------- steps


def _field(name: str) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        out = []
        for node in nodes:
            if type(node) is dict:
                found = node.get(name, MISSING)
                if found is not MISSING:
                    out.append(found)
        return out

    return step


def _fields(names: list[str]) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        return [node[n] for node in nodes if type(node) is dict for n in names if n in node]

    return step


def _wildcard(nodes: list[Any], root: Any) -> list[Any]:
    return [child for node in nodes for child in _children(node)]


def _index(index: int) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        return [node[index] for node in nodes if type(node) is list and 0 <= index < len(node)]

    return step


def _indexes(indexes: list[int]) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        return [node[i] for node in nodes if type(node) is list for i in indexes if 0 <= i < len(node)]

    return step


def _slice(bounds: slice) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        return [item for node in nodes if type(node) is list for item in node[bounds]]

    return step


def _filter_step(predicate: _Filter) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        test = _prepare(predicate, root)
        if test is None:
            return []
        return [item for node in nodes if type(node) is list for item in node if test(root, item)]

    return step


def _index_by_field(node: Any, name: str) -> dict[str, list[Any]]:
    """Every object under ``node`` (itself included, document order) by its string ``name`` value."""
    index: dict[str, list[Any]] = {}
    kind = type(node)
    try:
        if kind is dict:
            _index_dict(node, name, index, 0)
        elif kind is list:
            _index_items(node, name, index, 0)
    except Exception:  # a value whose truth test fails (not JSON): walk without truth tests
        index = {}
        _index_by_stack(node, name, index)
    return index


# Nesting levels walked by recursion (cheaper than a stack) before the walk switches to a stack.
_RECURSIVE_DEPTH = 100


def _index_dict(node: dict[str, Any], name: str, index: dict[str, list[Any]], depth: int) -> None:
    found = node.get(name)
    if type(found) is str:
        bucket = index.get(found)
        if bucket is None:
            index[found] = [node]
        else:
            bucket.append(node)
    _index_items(node.values(), name, index, depth)


def _index_items(items: Iterable[Any], name: str, index: dict[str, list[Any]], depth: int) -> None:
    """Indexes the objects under each of ``items`` in order (pre-order: a node, then its subtree).

    Falsy items (empty containers, scalars) hold no object and are skipped by ``filter`` in C; the
    common page shape (a list of points, each a dict of scalars and small lists of dicts) is walked
    two levels per call.
    """
    if depth >= _RECURSIVE_DEPTH:
        for item in items:
            _index_by_stack(item, name, index)
        return
    depth += 1
    for item in filter(None, items):
        kind = type(item)
        if kind is dict:
            found = item.get(name)
            if type(found) is str:
                bucket = index.get(found)
                if bucket is None:
                    index[found] = [item]
                else:
                    bucket.append(item)
            for child in filter(None, item.values()):
                kind = type(child)
                if kind is list:
                    _index_items(child, name, index, depth)
                elif kind is dict:
                    _index_dict(child, name, index, depth)
        elif kind is list:
            _index_items(item, name, index, depth)


def _index_by_stack(node: Any, name: str, index: dict[str, list[Any]]) -> None:
    """``_index_items`` for one deeply nested node, with an explicit stack instead of recursion."""
    stack = [node]
    pop = stack.pop
    push = stack.append
    while stack:
        current = pop()
        if type(current) is dict:
            found = current.get(name)
            if type(found) is str:
                bucket = index.get(found)
                if bucket is None:
                    index[found] = [current]
                else:
                    bucket.append(current)
            children: Any = reversed(current.values())
        elif type(current) is list:
            children = reversed(current)
        else:
            continue
        for child in children:
            kind = type(child)
            if (kind is dict or kind is list) and child:
                push(child)


class _ScanFilter:
    """``..[?(...)]``: every node of the subtree, the start included, that passes the filter."""

    def __init__(self, predicate: _Filter):
        self.predicate = predicate
        current = predicate.current_filter if isinstance(predicate, _HoistableAnd) else predicate
        self.field_key = current.field_key if current is not None else None

    def __call__(self, nodes: list[Any], root: Any) -> list[Any]:
        return self.run(nodes, root, None)

    def run(self, nodes: list[Any], root: Any, cache: dict[Any, Any] | None) -> list[Any]:
        test = _prepare(self.predicate, root)
        if test is None:
            return []
        out: list[Any] = []
        if self.field_key is not None and cache is not None:
            # Same message, many templates: index the objects by the field once, then look up.
            name, literal = self.field_key
            for node in nodes:
                key = (id(node), name)
                index = cache.get(key)
                if index is None:
                    index = cache[key] = _index_by_field(node, name)
                out.extend(index.get(literal, ()))
            return out
        for node in nodes:
            stack = [node]
            while stack:
                current = stack.pop()
                if test(root, current):
                    out.append(current)
                kind = type(current)
                if kind is dict:
                    if current:
                        stack.extend(reversed(current.values()))
                elif kind is list and current:
                    stack.extend(reversed(current))
        return out


def _scan_filter(predicate: _Filter) -> Step:
    return _ScanFilter(predicate)


def _scan_then(inner: Step) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        return inner([item for node in nodes for item in _descendants_and_self(node)], root)

    return step


def _scan_name(name: str) -> Step:
    def step(nodes: list[Any], root: Any) -> list[Any]:
        out = []
        for node in nodes:
            for item in _descendants_and_self(node):
                if type(item) is dict:
                    found = item.get(name, MISSING)
                    if found is not MISSING:
                        out.append(found)
        return out

    return step


def _scan_all(nodes: list[Any], root: Any) -> list[Any]:
    return [item for node in nodes for item in _descendants(node)]


# ----------------------------------------------------------------------------- public


def follow(node: Any, steps: tuple[str | int, ...]) -> Any:
    """The token at a chain of plain names and indexes (a simple path), or ``MISSING``."""
    for key in steps:
        if isinstance(key, str):
            if type(node) is not dict:
                return MISSING
            node = node.get(key, MISSING)
            if node is MISSING:
                return MISSING
        else:
            if type(node) is not list or not 0 <= key < len(node):
                return MISSING
            node = node[key]
    return node


class JsonPath:
    """A compiled JSONPath; ``select(data)`` returns every token, ``select_one`` at most one."""

    def __init__(self, text: str, steps: list[Step], simple: list[Any] | None):
        self.text = text
        self._steps = steps
        # The chain of plain names/indexes when the path is nothing else (fast single-value lookup).
        self._simple = tuple(simple) if simple is not None else None

    @property
    def simple_fields(self) -> tuple[str, ...] | None:
        if self._simple is None or not all(type(k) is str for k in self._simple):
            return None
        return self._simple

    def select_from(self, start: Any, root: Any, cache: dict[Any, Any] | None = None) -> list[Any]:
        nodes = [start]
        for step in self._steps:
            if not nodes:
                return nodes
            nodes = step.run(nodes, root, cache) if isinstance(step, _ScanFilter) else step(nodes, root)
        return nodes

    def select(self, data: Any, cache: dict[Any, Any] | None = None) -> list[Any]:
        """All tokens the path finds, in Json.NET order; ``data`` is both start node and ``$``.

        ``cache`` (a fresh dict per message, shared by the templates) lets recursive field filters
        index the message once; never reuse it after the message changed.
        """
        return self.select_from(data, data, cache)

    def select_one(self, data: Any) -> Any:
        """The single token found, or ``MISSING``; several tokens raise ``JsonPathMultipleTokensError``."""
        simple = self._simple
        if simple is not None:
            return follow(data, simple)
        found = self.select(data)
        if len(found) > 1:
            raise JsonPathMultipleTokensError(f"Path returned multiple tokens: {self.text}")
        return found[0] if found else MISSING

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"


def compile_jsonpath(text: str) -> JsonPath:
    """Parse ``text`` once; raises ``JsonPathSyntaxError`` naming the character position."""
    if not isinstance(text, str) or not text.strip():
        raise JsonPathSyntaxError(str(text), 0, "empty expression")
    parser = _Parser(text.strip())
    if parser.peek() == "$" or parser.peek() == "@":
        parser.pos += 1
    steps, simple = parser.parse_path(in_filter=False)
    if not parser.at_end():
        raise parser.error("unexpected trailing text")
    return JsonPath(parser.text, steps, simple)
