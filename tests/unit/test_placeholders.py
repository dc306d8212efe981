"""Run values ↔ placeholders (qa.provider.placeholders): exact both ways, and no value survives templating."""

from __future__ import annotations

import pytest

from qa.provider.placeholders import PlaceholderError, Placeholders, run_localpart_suffix, scope_values
from qa.scenario.runner import _localpart
from qa.shared.markers import MarkerFactory

TOKENS = {"token": "MQA-0123abcd", "token2": "MQA-4567ef01"}
VALUES = {**TOKENS, "run": "9f8e7d"}
EVENT = "$" + "A" * 20 + "bcdefghijklmnopqrstuvw"
EVENT2 = "$" + "Z" * 43
ROOM = "!AbCdEfGhIj:localhost"


def test_values_become_their_names_and_come_back() -> None:
    text = "mqa-bot-canary-9f8e7d: reply with only this exact marker: MQA-0123abcd then MQA-4567ef01"
    p = Placeholders(VALUES)
    template = p.template(text)
    assert template == "mqa-bot-canary-{run}: reply with only this exact marker: {token} then {token2}"
    assert p.expand(template) == text


def test_literal_braces_are_doubled_so_json_round_trips() -> None:
    text = '{"command": "printf MQA-0123abcd"} and a literal {token}'
    p = Placeholders(VALUES)
    template = p.template(text)
    assert template == '{{"command": "printf {token}"}} and a literal {{token}}'
    assert p.expand(template) == text


def test_a_new_runs_values_fill_the_same_template() -> None:
    recorded = Placeholders(VALUES).template("say MQA-0123abcd to mqa-bot-x-9f8e7d")
    replayed = Placeholders({"token": "MQA-ffffffff", "token2": "MQA-eeeeeeee", "run": "aaaaaa"})
    assert replayed.expand(recorded) == "say MQA-ffffffff to mqa-bot-x-aaaaaa"


def test_matrix_ids_are_numbered_by_first_appearance_and_reused() -> None:
    p = Placeholders(VALUES)
    assert p.template(f"reacted to {EVENT2} in {ROOM}, then {EVENT} and {EVENT2} again") == \
        "reacted to {event1} in {room1}, then {event2} and {event1} again"
    # The response of the same request gets this run's ids back.
    assert p.expand("echo {event2} {room1}") == f"echo {EVENT} {ROOM}"


def test_another_run_numbers_its_own_ids_alike() -> None:
    first = Placeholders(VALUES).template(f"x {EVENT} y {EVENT2}")
    second = Placeholders(VALUES).template(f"x {EVENT2} y {EVENT}")
    assert first == second == "x {event1} y {event2}"


def test_an_unknown_placeholder_is_an_error_not_a_silent_blank() -> None:
    with pytest.raises(PlaceholderError, match="token3"):
        Placeholders(VALUES).expand("{token3}")


def test_template_data_walks_lists_and_dicts() -> None:
    p = Placeholders(VALUES)
    data = {"messages": [{"content": "MQA-0123abcd"}], "n": 3, "flag": True, "none": None}
    assert p.template_data(data) == {"messages": [{"content": "{token}"}], "n": 3, "flag": True, "none": None}
    assert p.expand_data(p.template_data(data)) == data


@pytest.mark.parametrize("pieces, expected", [
    (["MQA-", "0123", "abcd", "!"], ["", "", "MQA-0123abcd", "!"]),
    (["hi MQA-0123abcd", " ok"], ["hi MQA-0123abcd", " ok"]),
    (["MQA-0123ab", "cd MQA-45", "67ef01"], ["", "MQA-0123abcd ", "MQA-4567ef01"]),
    ([], []),
])
def test_unsplit_keeps_each_value_in_one_piece(pieces: list[str], expected: list[str]) -> None:
    p = Placeholders(VALUES)
    out = p.unsplit(pieces)
    assert out == expected
    assert "".join(out) == "".join(pieces)
    assert all("MQA-" not in p.template(piece) for piece in out)


def test_run_suffix_is_what_the_runner_puts_in_localparts() -> None:
    run_id = "20261201T221559Z-A1b2C3"
    assert _localpart("bot", "canary", run_id).endswith("-" + run_localpart_suffix(run_id))


def test_scope_values_carry_every_marker_and_the_run() -> None:
    markers = MarkerFactory("seed").child("canary")
    values = scope_values(markers, "x-abcdef")
    assert values["run"] == "abcdef"
    assert {k: v for k, v in values.items() if k != "run"} == dict(markers)
