"""Hostile YAML is refused quickly with a location, never expanded or recursed into (qa.safe_yaml)."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from qa import safe_yaml
from qa.safe_yaml import MAX_DEPTH, MAX_NODES, YAMLProblem


def alias_bomb(levels: int, width: int = 9) -> str:
    """`levels` layers of `width` aliases each: a few hundred bytes standing for width**levels strings."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "x: " + "[" * depth + "]" * depth + "\n"


def test_an_alias_bomb_is_refused_without_being_expanded() -> None:
    # 9**6 = 531 441 strings: PyYAML composes it as a small graph; walking it as a tree is what hangs.
    with pytest.raises(YAMLProblem, match=r"more than \d+ nodes once its aliases are expanded") as info:
        safe_yaml.compose(alias_bomb(6))
    assert info.value.line is not None


def test_aliases_that_stay_small_are_fine() -> None:
    root, data = safe_yaml.compose(alias_bomb(3))  # 9**3 = 729 strings
    assert root is not None and isinstance(data, dict) and len(data["a2"]) == 9


def test_the_node_limit_counts_the_expanded_tree() -> None:
    # Just over the limit through aliases alone: every distinct node is few, the tree is big.
    width = 400
    text = f"a: &a [{', '.join(['x'] * width)}]\nb: [{', '.join(['*a'] * (MAX_NODES // width + 1))}]\n"
    with pytest.raises(YAMLProblem, match="nodes"):
        safe_yaml.compose(text)


def hundreds(padding: int, copies: int = 998) -> str:
    """`a` is a list of 100 nodes, `b` holds `copies` aliases of it and `padding` scalars: the document stands for
    root + 2 keys + a + b = 1 + 2 + 100 + (1 + 100 * copies + padding) nodes."""
    return "a: &a [" + ", ".join(["x"] * 99) + "]\nb: [" + ", ".join(["*a"] * copies + ["y"] * padding) + "]\n"


def test_the_node_limit_is_exact() -> None:
    assert safe_yaml.compose(hundreds(96))[1] is not None  # exactly MAX_NODES
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose(hundreds(97))
    assert (str(info.value), info.value.line, info.value.column) == (
        f"expands to more than {MAX_NODES} nodes once its aliases are expanded (an alias bomb?)", 1, 1)


def test_the_node_that_overflows_is_named_where_it_starts() -> None:
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose("pad: 1\n" + hundreds(0, copies=1000))
    assert (info.value.line, info.value.column) == (3, 4)


def chain(layers: int) -> str:
    """`layers` lists, each holding an alias of the one before: shallow as written, one level deeper per layer."""
    return "\n".join(["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, layers)]) + "\n"


def test_the_expanded_depth_limit_is_exact() -> None:
    assert safe_yaml.compose(chain(MAX_DEPTH - 2))[1] is not None  # the root, 62 lists and x: 64 levels
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose(chain(MAX_DEPTH - 1))
    assert (str(info.value), info.value.line, info.value.column) == (
        f"nests deeper than {MAX_DEPTH} levels once its aliases are expanded (an alias bomb?)", 1, 1)


def test_at_exactly_the_node_limit_a_document_too_deep_is_told_too_deep() -> None:
    # root 1 + p (key, list of 100) + q (key, list, 977 aliases of p, 54 scalars) + 63 chained layers and their
    # keys (2142) = 100 000 nodes, reached just as the last layer goes one level too deep.
    def padded(scalars: int) -> str:
        return ("p: &p [" + ", ".join(["y"] * 99) + "]\nq: [" + ", ".join(["*p"] * 977 + ["y"] * scalars) + "]\n"
                + chain(MAX_DEPTH - 1))

    with pytest.raises(YAMLProblem, match=f"^nests deeper than {MAX_DEPTH} levels"):
        safe_yaml.compose(padded(54))
    with pytest.raises(YAMLProblem, match=f"^expands to more than {MAX_NODES} nodes"):
        safe_yaml.compose(padded(55))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_pathological_nesting_is_refused_with_its_line(depth: int) -> None:
    with pytest.raises(YAMLProblem, match=f"nested deeper than {MAX_DEPTH} levels") as info:
        safe_yaml.compose(nested(depth))
    assert info.value.line == 1


def test_nesting_within_the_limit_is_fine() -> None:
    _, data = safe_yaml.compose(nested(MAX_DEPTH - 2))
    assert isinstance(data, dict)


def test_aliases_cannot_nest_past_the_depth_limit() -> None:
    # Each layer is shallow, but the aliased tree it stands for gets one level deeper per layer.
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    with pytest.raises(YAMLProblem, match="deeper than"):
        safe_yaml.compose("\n".join(lines) + "\n")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YAMLProblem, match="contains it"):
        safe_yaml.compose("a: &a [1, *a]\n")


def test_a_recursive_alias_is_located_at_the_node_that_contains_itself() -> None:
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose("x: 1\na: &a [1, *a]\n")
    assert (str(info.value), info.value.line, info.value.column) == (
        "an alias refers to a node that contains it (recursive YAML is not allowed)", 2, 4)


def test_a_raw_control_character_is_located() -> None:
    with pytest.raises(YAMLProblem, match="control character #x0007") as info:
        safe_yaml.compose("a: 1\nb: 'x\x07y'\n")
    assert (info.value.line, info.value.column) == (2, 6)


def test_escaped_control_characters_are_still_yaml() -> None:
    _, data = safe_yaml.compose('a: "x\\ty"\n')
    assert data == {"a": "x\ty"}


def test_the_limits_are_the_documented_ones() -> None:
    assert (MAX_DEPTH, MAX_NODES) == (64, 100_000)


def test_the_depth_limit_is_exact_and_located_at_the_first_level_too_deep() -> None:
    # The top-level mapping is the first level: x's value may open MAX_DEPTH - 2 lists inside the first one.
    assert safe_yaml.compose(nested(MAX_DEPTH - 1))[1] is not None
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose(nested(MAX_DEPTH))
    assert (str(info.value), info.value.line, info.value.column) == (
        f"nested deeper than {MAX_DEPTH} levels", 1, len("x: ") + MAX_DEPTH)


def test_the_depth_counts_the_path_down_not_every_node_seen() -> None:
    # Many siblings, each nested deep but within the limit: leaving a node gives its level back.
    sibling = "[" * (MAX_DEPTH - 4) + "]" * (MAX_DEPTH - 4)
    _, data = safe_yaml.compose("x: [" + ", ".join([sibling] * 5) + "]\ny: " + sibling + "\n")
    assert isinstance(data, dict) and len(data["x"]) == 5


def test_leaving_a_node_gives_back_exactly_its_level() -> None:
    # An empty list closed before a deep sibling: the sibling is as deep as it would be alone.
    assert safe_yaml.compose("x: [[], " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "]\n")[1] is not None
    with pytest.raises(YAMLProblem, match=f"nested deeper than {MAX_DEPTH} levels"):
        safe_yaml.compose("x: [[], " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "]\n")


def test_a_problem_may_have_no_place() -> None:
    problem = YAMLProblem("why")
    assert (str(problem), problem.line, problem.column) == ("why", None, None)


def test_a_control_character_is_named_with_how_to_write_it() -> None:
    with pytest.raises(YAMLProblem) as info:
        safe_yaml.compose("a: '\x1b'\n")
    assert str(info.value) == ("control character #x001b is not allowed in YAML (write it as an escape in a "
                               "double-quoted string if you mean it)")


# --- locating a validation error in the YAML it came from (one helper for every file the runner reads) ---------

class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    items: list[Inner] = []
    labels: dict[str, str] = {}


def located(text: str) -> list[tuple[tuple[str | int, ...], str, str, str]]:
    """(loc, kind, message, where) of each problem of `text` as an Outer."""
    root, data = safe_yaml.compose(text)
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return [(p.loc, p.kind, p.message, p.where()) for p in safe_yaml.field_errors(info.value, root)]


def test_a_bad_value_is_located_at_the_value() -> None:
    assert located("name: n\nitems:\n  - size: 1\n  -   size: big\n") == [
        (("items", 1, "size"), "int_parsing",
         "Input should be a valid integer, unable to parse string as an integer", ":4:13"),
    ]


def test_an_unknown_field_is_located_at_its_key_and_a_missing_one_at_the_mapping() -> None:
    assert located("name: n\nitems:\n  - {size: 1,   colour: red}\n  - {}\n") == [
        (("items", 0, "colour"), "extra_forbidden", "Extra inputs are not permitted", ":3:17"),
        (("items", 1, "size"), "missing", "Field required", ":4:5"),
    ]
    assert located("\nitems: []\n") == [(("name",), "missing", "Field required", ":2:1")]


def test_a_bad_key_is_located_at_the_key() -> None:
    assert located("name: n\nlabels:\n  ok: x\n  7: y\n")[0][::3] == (("labels", 7, "[key]"), ":4:3")


def test_the_value_error_prefix_is_dropped_and_nothing_else() -> None:
    root, _ = safe_yaml.compose("a: 1\n")
    error = {"type": "value_error", "loc": ("a",), "msg": "Value error, Value error, no", "input": 1}
    problem = safe_yaml.FieldError(error, safe_yaml.locate(root, ("a",), at_key=False))  # type: ignore[arg-type]
    assert problem.message == "Value error, no" and problem.where() == ":1:4"
    assert safe_yaml.FieldError(error, None).where() == ""  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.node = None  # type: ignore[misc]


def test_without_a_document_nothing_is_located() -> None:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate({})
    assert [p.node for p in safe_yaml.field_errors(info.value, None)] == [None]
    assert safe_yaml.line_of(None, ("name",)) == 1


def test_line_of_is_the_deepest_node_that_exists() -> None:
    root, _ = safe_yaml.compose("a:\n  b:\n    - x\n    - y\nc: 1\n")
    assert safe_yaml.line_of(root, ("a", "b", 1)) == 4
    assert safe_yaml.line_of(root, ("a", "b")) == 3  # the value, not its key on the line before
    assert safe_yaml.line_of(root, ("a", "b", 2)) == 3  # past the end: the list itself
    assert safe_yaml.line_of(root, ("a", "missing")) == 2  # the mapping that lacks it
    assert safe_yaml.line_of(root, ("c", "deeper")) == 5
    assert safe_yaml.line_of(root, ()) == 1


def test_field_path_writes_indexes_in_brackets() -> None:
    assert safe_yaml.field_path(("steps", 1, "send", "body")) == "steps[1].send.body"
    assert safe_yaml.field_path((0, "a", 2, 3)) == "[0].a[2][3]"
    assert safe_yaml.field_path(()) == ""


def test_a_document_that_refuses_aliases() -> None:
    refused = "no anchors here"
    for text in ("a: &x 1\nb: *x\n", "a: &x [1]\nb: [*x]\n", "? &k k\n: v\nw: *k\n"):
        with pytest.raises(YAMLProblem, match=refused) as info:
            safe_yaml.compose(text, no_aliases=refused)
        assert info.value.line is None
        assert safe_yaml.compose(text)[0] is not None  # aliases are fine unless refused
    assert safe_yaml.compose("a: [1, 1]\nb: {c: 1}\n", no_aliases=refused)[1] == {"a": [1, 1], "b": {"c": 1}}
    assert safe_yaml.compose("", no_aliases=refused) == (None, None)
