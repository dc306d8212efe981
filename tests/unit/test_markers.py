from __future__ import annotations

import re

import pytest

from qa.shared.markers import (
    TOKEN_NAMES,
    TOKEN_RE,
    Marker,
    MarkerError,
    MarkerFactory,
    _derive,
    check,
    expand,
    new_markers,
    parse,
)


def test_token_names() -> None:
    assert TOKEN_NAMES[0] == "token"
    assert TOKEN_NAMES[1:] == tuple(f"token{n}" for n in range(2, 10))


def test_tokens_have_an_echo_friendly_shape() -> None:
    markers = new_markers("seed")
    for name in TOKEN_NAMES:
        value = markers[name]
        assert TOKEN_RE.fullmatch(value), value
        assert re.fullmatch(r"[A-Za-z0-9-]+", value)


def test_tokens_are_distinct_within_a_run() -> None:
    markers = new_markers("seed")
    assert len(set(markers.values())) == len(TOKEN_NAMES)


def test_seed_makes_tokens_reproducible() -> None:
    assert dict(new_markers("run-1")) == dict(new_markers("run-1"))
    assert new_markers("run-1")["token"] != new_markers("run-2")["token"]


def test_unseeded_runs_get_fresh_tokens() -> None:
    assert new_markers()["token"] != new_markers()["token"]


def test_child_factories_differ_per_scenario_but_are_reproducible() -> None:
    run = new_markers("run")
    a, b = run.child("canary"), run.child("threads")
    assert a["token"] != b["token"] != run["token"]
    assert dict(a) == dict(new_markers("run").child("canary"))


def test_factory_only_knows_token_names() -> None:
    markers = new_markers("s")
    assert "token" in markers and "token9" in markers
    assert "token1" not in markers and "token10" not in markers
    with pytest.raises(KeyError):
        markers["bot"]


def test_expand_substitutes_markers() -> None:
    markers = new_markers("s")
    out = expand("reply with only this exact marker: {token} then {token2}", markers)
    assert out == f"reply with only this exact marker: {markers['token']} then {markers['token2']}"


def test_expand_with_plain_mapping_and_extra_names() -> None:
    assert expand("hi {bot_name}!", {"bot_name": "Bot"}) == "hi Bot!"


def test_doubled_braces_are_literal() -> None:
    assert expand('{{"a": 1}} {{token}} {{{token}}}', {"token": "T"}) == '{"a": 1} {token} {T}'


def test_text_without_markers_is_unchanged() -> None:
    assert expand("plain text", {}) == "plain text"
    assert expand("", {}) == ""


def test_expand_unknown_marker_raises() -> None:
    with pytest.raises(MarkerError) as info:
        expand("say {token3}", {"token": "T"})
    assert info.value.position == 4


def test_parse_splits_literals_and_markers() -> None:
    assert parse("a {token} b{token2}") == ["a ", Marker("token", 2), " b", Marker("token2", 11)]


@pytest.mark.parametrize(
    ("text", "position"),
    [("open { brace", 5), ("close } brace", 6), ('json {"a": 1}', 5), ("{Token}", 0), ("{ token }", 0), ("{}", 0)],
)
def test_malformed_templates(text: str, position: int) -> None:
    with pytest.raises(MarkerError) as info:
        parse(text)
    assert info.value.position == position


def test_check_returns_names_in_first_use_order() -> None:
    assert check("{token2} {token} {token2}") == ["token2", "token"]
    assert check("no markers") == []


def test_check_rejects_names_the_runner_does_not_define() -> None:
    with pytest.raises(MarkerError, match=r"unknown marker \{tokn\}"):
        check("{tokn}")
    with pytest.raises(MarkerError):
        check("{token1}")
    assert check("{user}", allowed={"user"}) == ["user"]


def test_factory_is_a_mapping_of_all_names() -> None:
    markers = MarkerFactory("x")
    assert list(markers) == list(TOKEN_NAMES)
    assert len(markers) == len(TOKEN_NAMES)
    assert markers.seed == "x"


def test_a_seed_gives_the_same_tokens_across_versions() -> None:
    # Replaying a run from its seed must work with a later matrix-qa too: the derivation is pinned by value.
    markers = new_markers("seed")
    assert (markers["token"], markers["token2"], markers["token9"]) == ("MQA-d56f78de", "MQA-bb191984",
                                                                        "MQA-2e4b98c9")
    child = markers.child("canary")
    assert (child.seed, child["token"]) == ("seed/canary", "MQA-bf0a684c")
    assert list(child) == list(TOKEN_NAMES)
    assert repr(markers) == "MarkerFactory(seed='seed')"


def test_a_factory_can_be_made_for_other_names() -> None:
    markers = MarkerFactory("seed", ("user", "token"))
    assert list(markers) == ["user", "token"]
    assert markers["token"] == "MQA-d56f78de"
    assert list(markers.child("x")) == ["user", "token"]


def test_a_colliding_token_is_derived_again() -> None:
    first = _derive("seed", "token", set())
    again = _derive("seed", "token", {first})
    assert again != first and TOKEN_RE.fullmatch(again)
    assert _derive("seed", "token", {first, again}) not in {first, again}
    # The fallback is part of what a seed reproduces, so its value is pinned like the first one.
    assert (first, again) == ("MQA-d56f78de", "MQA-cc1f3fd8")


def test_markers_are_immutable_values() -> None:
    marker = parse("{token}")[0]
    assert {marker, Marker("token", 0)} == {Marker("token", 0)}
    with pytest.raises(AttributeError):
        marker.name = "token2"  # type: ignore[misc]


def test_unseeded_runs_get_a_random_hex_seed() -> None:
    seed = new_markers().seed
    assert re.fullmatch(r"[0-9a-f]{16}", seed), seed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("open { brace", "unmatched '{' at position 5; write '{{' for a literal brace"),
        ("close } brace", "unmatched '}' at position 6; write '}}' for a literal brace"),
        ('json {"a": 1}', "'{\"a\": 1}' at position 5 is not a marker (names look like {token}); "
                          "write '{{' and '}}' for literal braces"),
        ("{}", "'{}' at position 0 is not a marker (names look like {token}); write '{{' and '}}' for literal braces"),
    ],
)
def test_malformed_template_messages(text: str, message: str) -> None:
    with pytest.raises(MarkerError) as info:
        parse(text)
    assert str(info.value) == message


def test_unknown_and_missing_marker_messages() -> None:
    with pytest.raises(MarkerError) as info:
        check("ok {tokn}", allowed=("token", "token2"))
    assert str(info.value) == (
        "unknown marker {tokn} at position 3 (known: {token}, {token2}; write '{{' and '}}' for literal braces)"
    )
    assert info.value.position == 3
    with pytest.raises(MarkerError) as info:
        expand("say {token3}", {"token": "T"})
    assert str(info.value) == "marker {token3} at position 4 has no value in this run"


def test_parse_emits_no_empty_literals() -> None:
    assert parse("{token}") == [Marker("token", 0)]
    assert parse("{token}{token2}") == [Marker("token", 0), Marker("token2", 7)]
    assert parse("") == []
    assert parse("a{{b}}c") == ["a{b}c"]
    assert parse("{{{token}}}x") == ["{", Marker("token", 2), "}x"]
    assert parse("{a_1}") == [Marker("a_1", 0)]


def test_marker_names_start_with_a_lowercase_letter() -> None:
    for bad in ("{1token}", "{_x}", "{to-ken}", "{tokén}"):
        with pytest.raises(MarkerError):
            parse(bad)
