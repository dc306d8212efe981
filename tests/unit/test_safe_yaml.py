"""Hostile YAML is refused quickly with a location, never expanded or recursed into (qa.safe_yaml)."""

from __future__ import annotations

import pytest

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


def test_a_raw_control_character_is_located() -> None:
    with pytest.raises(YAMLProblem, match="control character #x0007") as info:
        safe_yaml.compose("a: 1\nb: 'x\x07y'\n")
    assert (info.value.line, info.value.column) == (2, 6)


def test_escaped_control_characters_are_still_yaml() -> None:
    _, data = safe_yaml.compose('a: "x\\ty"\n')
    assert data == {"a": "x\ty"}
