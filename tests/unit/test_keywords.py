"""-k patterns (qa.harness.keywords): substrings, globs, and/or/not/parentheses, and the errors a bad one gets."""

from __future__ import annotations

import pytest

from qa.harness.keywords import PatternError, compile_pattern, compile_patterns, word_matcher

ID, TITLE = "matrix-thread-follow-up", "A Mention inside a thread is answered"


def picks(pattern: str, sid: str = ID, title: str = TITLE) -> bool:
    return compile_pattern(pattern)(sid, title)


@pytest.mark.parametrize(("word", "expected"), [
    ("thread", True), ("THREAD", True), ("follow-up", True), ("mention", True), ("ANSWERED", True),
    ("matrix-thread-follow-up", True), ("lock", False), ("answeredx", False),
])
def test_a_plain_word_is_a_case_insensitive_substring_of_id_or_title(word: str, expected: bool) -> None:
    assert picks(word) is expected


@pytest.mark.parametrize(("word", "expected"), [
    ("matrix-*", True), ("*-up", True), ("*thread*", True), ("matrix-?hread-follow-up", True),
    ("matrix-[st]hread-follow-up", True), ("a*answered", True), ("*ANSWERED", True),
    ("thread*", False),  # a glob is matched against the whole id or title, not a part of it
    ("matrix-[xy]hread-follow-up", False), ("?", False),
])
def test_a_word_with_glob_characters_matches_the_whole_id_or_title(word: str, expected: bool) -> None:
    assert picks(word) is expected


def test_a_glob_matches_the_title_when_the_id_does_not() -> None:
    assert word_matcher("a*answered")("zzz", TITLE)
    assert word_matcher("zz*")("zzz", TITLE)
    assert not word_matcher("q*")("zzz", TITLE)


def test_substring_matches_the_title_alone_and_the_id_alone() -> None:
    assert word_matcher("inside")("zzz", TITLE)
    assert word_matcher("zz")("zzz", "nothing")
    assert not word_matcher("q")("zzz", "nothing")


@pytest.mark.parametrize(("pattern", "expected"), [
    ("not lock", True), ("not thread", False), ("not not thread", True),
    ("thread and mention", True), ("thread and lock", False), ("lock and thread", False),
    ("lock or thread", True), ("thread or lock", True), ("lock or e2ee", False),
    ("thread and not lock", True), ("not lock and not e2ee", True), ("not lock and not thread", False),
    ("lock or thread and mention", True), ("lock or thread and e2ee", False),
    ("(lock or thread) and mention", True), ("(lock or thread) and e2ee", False),
    ("not (lock or thread)", False), ("not (lock or e2ee)", True),
    ("thread and mention and answered", True), ("thread and mention and e2ee", False),
    ("lock or e2ee or thread", True), ("lock or e2ee or restart", False),
    ("( thread )", True), ("(thread)", True), ("((thread))", True),
])
def test_and_or_not_and_parentheses_combine_as_pytest_does(pattern: str, expected: bool) -> None:
    assert picks(pattern) is expected


def test_and_binds_tighter_than_or() -> None:
    # a or (b and c): true through `a` alone even though c fails
    assert compile_pattern("thread or lock and e2ee")(ID, TITLE)
    assert not compile_pattern("(thread or lock) and e2ee")(ID, TITLE)


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "empty pattern"),
    ("   ", "empty pattern"),
    ("not", "pattern ends where a word or '(' was expected"),
    ("thread and", "pattern ends where a word or '(' was expected"),
    ("(thread", "pattern ends where a word or '(' was expected"),
    ("(thread lock)", "'(' without its ')'"),
    ("thread)", "unexpected ')' after a complete pattern"),
    ("thread lock", "unexpected 'lock' after a complete pattern"),
    ("and thread", "unexpected 'and' where a word or '(' was expected"),
    ("or", "unexpected 'or' where a word or '(' was expected"),
    (")", "unexpected ')' where a word or '(' was expected"),
    ("thread and or lock", "unexpected 'or' where a word or '(' was expected"),
])
def test_a_bad_pattern_says_what_is_wrong(pattern: str, message: str) -> None:
    with pytest.raises(PatternError) as err:
        compile_pattern(pattern)
    assert str(err.value) == message


def test_several_patterns_pick_what_any_of_them_picks() -> None:
    match = compile_patterns(["lock", "thread"])
    assert match(ID, TITLE)
    assert match("x-lock", "t")
    assert not match("e2ee", "t")
    assert compile_patterns(["lock", "not e2ee"])("a", "b")


def test_no_pattern_picks_everything() -> None:
    assert compile_patterns([])("anything", "at all")


def test_a_bad_pattern_among_several_is_named() -> None:
    with pytest.raises(PatternError) as err:
        compile_patterns(["lock", "thread and"])
    assert str(err.value) == "'thread and': pattern ends where a word or '(' was expected"
