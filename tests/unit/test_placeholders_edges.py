"""Placeholders at their edges (the nine mutation survivors named in MUTATION.md): the longest value wins, every
occurrence of a value is found (overlapping ones too), a stream cut exactly at a value's edge stays where it
is, empty values are never substituted, and only `event<N>` / `room<N>` with N ≥ 1 are numbered names."""

from __future__ import annotations

import pytest

from qa.provider.placeholders import Placeholders, is_known_name


def test_a_value_inside_a_longer_one_does_not_split_it() -> None:
    ph = Placeholders({"token": "MQA-1234", "token2": "MQA-12345678"})
    assert ph.template("MQA-12345678 then MQA-1234") == "{token2} then {token}"
    ph = Placeholders({"token2": "MQA-12345678", "token": "MQA-1234"})  # whatever order they are given in
    assert ph.template("MQA-12345678 then MQA-1234") == "{token2} then {token}"
    ph = Placeholders({"token2": "MQA-1234", "token": "MQA-12345678"})  # the value's length, not the name's
    assert ph.template("MQA-12345678 then MQA-1234") == "{token} then {token2}"


def test_every_occurrence_is_a_span_overlapping_ones_included() -> None:
    ph = Placeholders({"token": "aa"})
    assert ph.spans("xaaay") == [(1, 3), (2, 4)]
    assert ph.spans("aa-aa", keep=["-"]) == [(0, 2), (2, 3), (3, 5)]


@pytest.mark.parametrize(("pieces", "expected"), [
    (["say ", "MQA-1234", " done"], ["say ", "MQA-1234", " done"]),  # cuts at a value's start and end stay
    (["say MQA-1234", " done"], ["say MQA-1234", " done"]),
    (["say MQA-", "1234 done"], ["say ", "MQA-1234 done"]),  # a cut inside moves to the value's start
])
def test_only_a_cut_inside_a_value_moves(pieces: list[str], expected: list[str]) -> None:
    assert Placeholders({"token": "MQA-1234"}).unsplit(pieces) == expected


def test_an_empty_value_is_never_substituted() -> None:
    ph = Placeholders({"token": "", "run": "x1y2z3"})
    assert ph.template("ab x1y2z3") == "ab {run}"
    assert ph.spans("ab") == []


@pytest.mark.parametrize(("name", "known"), [
    ("event1", True), ("room1", True), ("event10", True), ("room42", True),
    ("event0", False), ("event01", False), ("event", False), ("events1", False), ("xroom1", False),
    ("room1x", False), ("token", True), ("token7", False),
])
def test_numbered_names_start_at_one(name: str, known: bool) -> None:
    assert is_known_name(name, frozenset({"token", "run"})) is known


def test_names_lists_fixed_values_and_the_ids_found_so_far() -> None:
    ph = Placeholders({"token": "MQA-1234"})
    event = "$" + "A" * 43
    ph.template(f"react to {event} in !abcdefgh:localhost")
    assert ph.names == {"token": "MQA-1234", "event1": event, "room1": "!abcdefgh:localhost"}
