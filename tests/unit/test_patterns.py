"""A user's regular expression: one type, one error path, bounded in compile size and match time (qa.patterns)."""

from __future__ import annotations

import re
import time
from re import _parser as sre_parse  # type: ignore[attr-defined]

import pytest

from qa.patterns import MAX_EXPANSION, PatternTimeout, UserPattern, compile_regex, expansion, user_pattern


@pytest.mark.parametrize(("pattern", "size"), [
    ("abc", 3), ("a{5}", 5), ("(a{10}){10}", 100), ("a+", 1), ("a*", 1), ("a{0,9}", 1), ("a|b{30}", 31),
    ("(?=a{10})b", 11), ("(?!a{4})", 4), ("(?>a{3})", 3), ("(a)(?(1)b{5}|c{7})", 13), ("(?:x{2}){3}", 6),
])
def test_expansion_multiplies_counted_repeats_out(pattern: str, size: int) -> None:
    assert expansion(sre_parse.parse(pattern)) == size


@pytest.mark.parametrize(("pattern", "says"), [
    ("(unclosed", "invalid regex '(unclosed': missing ), unterminated subpattern at position 0"),
    ("a{99999999999}", "a repeat count past the engine's limit"),
    ("((a{1000}){1000}){1000}", "multiply out to 1000000000 characters; at most 20000"),
    ("x" * 2001, "regular expression of 2001 characters; at most 2000"),
    ("(" * 2000 + ")" * 0, "invalid regex"),
])
def test_every_bad_pattern_is_one_value_error(pattern: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        user_pattern(pattern)
    assert says in str(caught.value)


def test_at_the_bound_is_fine_past_it_is_not() -> None:
    assert user_pattern(f"a{{{MAX_EXPANSION}}}").search("a" * MAX_EXPANSION) is not None
    with pytest.raises(ValueError):
        user_pattern(f"a{{{MAX_EXPANSION}}}b")


def test_the_pattern_type_takes_text_or_a_compiled_one_and_keeps_named_groups() -> None:
    pattern = compile_regex(r"marker: (?P<marker>\S+)")
    assert isinstance(pattern, UserPattern) and compile_regex(pattern) is pattern
    assert pattern.groupindex == {"marker": 1} and pattern.pattern == r"marker: (?P<marker>\S+)"
    assert pattern.search("the marker: MQA-1 here").groupdict() == {"marker": "MQA-1"}
    assert pattern == UserPattern(r"marker: (?P<marker>\S+)") and len({pattern, compile_regex(pattern)}) == 1
    assert "marker" in repr(pattern)
    with pytest.raises(ValueError, match="must be a string, not int"):
        compile_regex(5)


def test_catastrophic_backtracking_is_a_configuration_error_not_a_hang() -> None:
    began = time.monotonic()
    with pytest.raises(PatternTimeout, match=r"/\(a\|aa\)\+\$/ took over 0.25s on a 61-character text"):
        user_pattern("(a|aa)+$").search("a" * 60 + "b")
    assert time.monotonic() - began < 30, "bounded (the figure is loose: a loaded machine is slow)"


def test_durations_are_bounded_and_a_huge_integer_is_a_value_error() -> None:
    from qa.scenario.fields import MAX_DURATION_S, parse_duration
    assert parse_duration(MAX_DURATION_S) == MAX_DURATION_S and parse_duration("168h") == MAX_DURATION_S
    for bad in (MAX_DURATION_S + 1, "169h", 10 ** 400, "9" * 30 + "h"):
        with pytest.raises(ValueError, match="at most 604800s"):
            parse_duration(bad)


def test_shard_counts_are_bounded() -> None:
    from qa.harness.plan import MAX_SHARDS, parse_shard
    from qa.kernel.errors import ConfigError
    assert parse_shard(f"{MAX_SHARDS}/{MAX_SHARDS}").count == MAX_SHARDS
    for bad in (f"1/{MAX_SHARDS + 1}", "1/" + "9" * 21, "9" * 7 + "/3"):
        with pytest.raises(ConfigError, match=f"at most {MAX_SHARDS}"):
            parse_shard(bad)


@pytest.mark.parametrize(("pattern", "size"), [
    ("za{5}", 6), ("zb(a{10}){10}", 102), ("z(?:y{2})", 3), ("z(y{2})", 3), ("z(?:a|b{30})", 32), ("z(?=a{10})", 11),
    ("z(?>a{3})", 4), ("z(?!a{4})", 5), ("(a)z(?(1)b{5}|c{7})", 14),
])
def test_expansion_adds_what_comes_before(pattern: str, size: int) -> None:
    assert expansion(sre_parse.parse(pattern)) == size


def test_the_messages_are_exact() -> None:
    cases = {
        "x" * 2001: "regular expression of 2001 characters; at most 2000",
        "(a": "invalid regex '(a': missing ), unterminated subpattern at position 0",
        "a{99999999999}": "invalid regex 'a{99999999999}': the repetition number is too large (a repeat count past "
                          "the engine's limit, or nesting too deep)",
    }
    for pattern, message in cases.items():
        with pytest.raises(ValueError) as caught:
            user_pattern(pattern)
        assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        compile_regex(5)
    assert str(caught.value) == "a regular expression must be a string, not int"


def test_equality_repr_and_the_pydantic_type() -> None:
    from pydantic import BaseModel

    from qa.patterns import Regex

    assert UserPattern("a") != UserPattern("b") and UserPattern("a") != "a"
    assert repr(UserPattern("a+")) == "UserPattern('a+')"

    class Rule(BaseModel):
        path: Regex

    rule = Rule.model_validate({"path": "/sync"})
    assert isinstance(rule.path, UserPattern) and rule.path.search("/x/sync") is not None
    assert rule.model_dump() == {"path": "/sync"}
    assert Rule.model_validate({"path": re.compile("a.")}).path == UserPattern("a.")
