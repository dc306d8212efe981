"""Compose YAML from files people hand us, refusing what would hang or crash the runner before it is built.

Scenario files and mock-provider rule files are both read through here. PyYAML alone accepts three kinds of
hostile input:

- an alias bomb ("billion laughs"): nine aliases of nine aliases of ... compose to a small graph, but anything
  that walks the data as a tree (pydantic, a template scan, json.dumps) does 9**n work. The graph is measured
  as the tree it stands for and refused past MAX_NODES, without ever expanding it;
- pathological nesting (`[[[[...]]]]`): PyYAML's composer recurses per level and dies with RecursionError;
  nesting is refused past MAX_DEPTH while composing, so the recursion never gets deep;
- raw control characters: PyYAML's ReaderError gives a character offset; it is turned into line:column here;
- values PyYAML cannot build (`2024-02-30` unquoted, an integer of thousands of digits): a bare ValueError while
  constructing, turned into line:column here too.

Every file the runner reads (scenarios, mock-provider rules, cassettes, bot files) is composed here, and its
problems are told the same way: `field_errors` walks the composed node tree back from each pydantic error's
location to the YAML that holds it (`locate`), and `field_path` writes the location as `steps[1].body`,
so a message reads `file:line:column: field: message`.

Limits, and why: a real scenario nests about eight levels and expands to a few thousand nodes; rule-file tool
arguments nest a little deeper. 64 levels and 100 000 nodes leave a wide margin and still stop a bomb in
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 64
MAX_NODES = 100_000

Loc = tuple[str | int, ...]  # a location in a document, as pydantic gives it: ("provider", "rules", 0)


@dataclass
class YAMLProblem(Exception):
    """Why a YAML text was refused; `line` and `column` are 1-based when known."""

    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        return self.message


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (aliases are checked after composing)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLProblem(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1, mark.column + 1)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> object:
        """A value PyYAML cannot build (an unquoted impossible date, an integer of thousands of digits) fails
        while building, not parsing, as a bare ValueError: here it becomes a problem at the node's line:column."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise value_problem(node, exc) from None


# The loader every file people hand us is read with (scenarios, rules, cassettes through `compose`; bot files).
HostileLoader = _DepthLimitedLoader


def value_problem(node: Node, exc: Exception) -> YAMLProblem:
    mark = node.start_mark
    shown = node.value if isinstance(node.value, str) else node.tag
    reason = str(exc).split(";")[0]
    return YAMLProblem(f"cannot build a value from {shown[:40]!r}{'…' if len(shown) > 40 else ''} ({reason}); "
                       "quote it if it is text", mark.line + 1, mark.column + 1)


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    line = before.count("\n") + 1
    return line, position - (before.rfind("\n") + 1) + 1


def reader_problem(text: str, exc: yaml.reader.ReaderError) -> YAMLProblem:
    """PyYAML's complaint about a control character, at line:column instead of a character offset."""
    line, column = _line_col(text, exc.position) if isinstance(exc.position, int) else (None, None)
    char = exc.character
    shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
    return YAMLProblem(f"control character {shown} is not allowed in YAML (write it as an escape in a "
                       f"double-quoted string if you mean it)", line, column)


def _measure(root: Node) -> None:
    """Refuse a graph whose tree form is too big or too deep, or that contains itself (a recursive alias).

    Sizes are memoized per node, so the cost is linear in the graph, not in the tree it stands for. An anchor
    is always composed before an alias to it, so memoized nodes are reached before their aliases and the
    recursion here is no deeper than the composed (already depth-limited) document.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes in its tree, depth of its tree)
    open_nodes: set[int] = set()

    def walk(node: Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            mark = node.start_mark
            raise YAMLProblem("an alias refers to a node that contains it (recursive YAML is not allowed)",
                              mark.line + 1, mark.column + 1)
        open_nodes.add(key)
        if isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        else:
            children = []
        total, depth = 1, 0
        for child in children:
            child_total, child_depth = walk(child)
            total += child_total
            depth = max(depth, child_depth)
            if total > MAX_NODES or depth + 1 > MAX_DEPTH:
                mark = node.start_mark
                what = (f"expands to more than {MAX_NODES} nodes" if total > MAX_NODES
                        else f"nests deeper than {MAX_DEPTH} levels")
                raise YAMLProblem(f"{what} once its aliases are expanded (an alias bomb?)",
                                  mark.line + 1, mark.column + 1)
        open_nodes.discard(key)
        sizes[key] = (total, depth + 1)
        return sizes[key]

    walk(root)


def has_alias(node: Node, seen: set[int] | None = None) -> bool:
    """Whether a composed tree reaches one node twice: an alias (anchors make a YAML tree a graph)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return True
    seen.add(id(node))
    if isinstance(node, MappingNode):
        return any(has_alias(k, seen) or has_alias(v, seen) for k, v in node.value)
    if isinstance(node, SequenceNode):
        return any(has_alias(v, seen) for v in node.value)
    return False


def compose(text: str, *, no_aliases: str | None = None) -> tuple[Node | None, object]:
    """(root node, constructed data) of a single-document YAML text; YAMLProblem for hostile input.

    Ordinary YAML errors (syntax, several documents) propagate as PyYAML's own exceptions, so callers keep
    their existing, more specific messages for them. With `no_aliases`, a document holding any anchor or alias
    is refused with that message, before it is measured or constructed (bot files have no use for them).
    """
    try:
        loader = _DepthLimitedLoader(text)  # the reader checks every character here, for a str
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        raise reader_problem(text, exc) from None
    try:
        if root is None:
            return None, None
        if no_aliases is not None and has_alias(root):
            raise YAMLProblem(no_aliases)
        _measure(root)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


# --- from a validation error's location back to the YAML that holds it -------------------------------------


def mapping_pair(node: MappingNode, key: str | int) -> tuple[Node, Node] | None:
    """(key node, value node) of `key` in a mapping node, or None."""
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == str(key):
            return key_node, value_node
    return None


def locate(root: Node, loc: Loc, *, at_key: bool) -> Node:
    """The deepest node the location reaches; `at_key` points at the final key rather than its value."""
    node = root
    parts = list(loc)
    for i, part in enumerate(parts):
        if part == "[key]":  # pydantic's marker for "the dict key itself was invalid"; handled one level up
            break
        last = i == len(parts) - 1
        if isinstance(node, MappingNode):
            pair = mapping_pair(node, part)
            if pair is None:
                return node  # e.g. a missing field: the mapping that should have held it
            key_is_bad = i + 1 < len(parts) and parts[i + 1] == "[key]"
            if key_is_bad or (last and at_key):
                return pair[0]
            node = pair[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def line_of(root: Node | None, loc: Loc) -> int:
    """1-based line of the deepest node `loc` reaches (the field itself, or the mapping that lacks it); 1 when
    there is no document."""
    return locate(root, loc, at_key=False).start_mark.line + 1 if root is not None else 1


def field_path(loc: Loc) -> str:
    """The location ("steps", 1, "body") as a field path: steps[1].body."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass(frozen=True)
class FieldError:
    """One pydantic validation error and the YAML node it points at (None when there is no document)."""

    error: ErrorDetails
    node: Node | None

    @property
    def loc(self) -> Loc:
        return tuple(self.error["loc"])

    @property
    def kind(self) -> str:
        return self.error["type"]

    @property
    def message(self) -> str:
        """pydantic's message without its `Value error, ` prefix: the file:line before it already says so."""
        return self.error["msg"].removeprefix("Value error, ")

    def where(self) -> str:
        """`:line:column` (1-based) of the node, to follow a file name; empty without a node."""
        if self.node is None:
            return ""
        mark = self.node.start_mark
        return f":{mark.line + 1}:{mark.column + 1}"


def field_errors(exc: ValidationError, root: Node | None) -> list[FieldError]:
    """Each error of `exc` located in the YAML tree its data was constructed from: an unknown field at its key,
    any other problem at its value (or, for a missing field, at the mapping that should hold it)."""
    return [FieldError(err, locate(root, tuple(err["loc"]), at_key=err["type"] == "extra_forbidden")
                       if root is not None else None)
            for err in exc.errors(include_url=False)]
