from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qa.kernel.errors import ConfigError
from qa.safe_yaml import field_path
from qa.scenario.fields import parse_duration
from qa.scenario.loader import (
    ScenarioError,
    ScenarioErrors,
    load_scenario,
    load_scenarios,
    validate_paths,
)
from qa.scenario.schema import Scenario
from qa.scenario.steps.lifecycle import RestartBot, RestartHomeserver
from qa.scenario.steps.messages import Send
from qa.scenario.steps.reactions import React
from qa.scenario.steps.replies import ExpectReply
from qa.scenario.steps.silence import ExpectNoReply

REPO = Path(__file__).resolve().parents[2]

HEADER = """\
id: {id}
title: A scenario
profiles: [fast]
"""


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def scenario_file(tmp_path: Path, steps: str, *, name: str = "s.yaml", sid: str = "s", extra: str = "") -> Path:
    """A valid header (lines 1-3), then `extra`, then `steps:` and the given step lines."""
    text = HEADER.format(id=sid) + textwrap.dedent(extra) + "steps:\n" + textwrap.dedent(steps)
    return write(tmp_path, name, text)


def only_error(path: Path) -> ScenarioError:
    errors = validate_paths([path])
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


# --- the real canary ---------------------------------------------------------------------------------------


def test_the_skipped_prompt_scenario_never_takes_a_leaked_lock_over() -> None:
    """Its waitMs bound catches a leaked lock only while no append may take the leak over within the scenario:
    maxHoldMs and staleMs both past its timeout (at maxHoldMs 20000 a leak ~20 s old was taken over at once)."""
    sc = load_scenario(REPO / "scenarios" / "matrix-skipped-prompt-releases-lock.yaml")
    lock = sc.bot.session_write_lock
    assert lock is not None and lock.max_hold_ms is not None and lock.stale_ms is not None, lock
    assert lock.max_hold_ms > sc.timeout * 1000 and lock.stale_ms > sc.timeout * 1000, lock


def test_canary_loads() -> None:
    path = REPO / "scenarios" / "canary.yaml"
    sc = load_scenario(path)
    assert sc.id == "canary"
    assert sc.source_path == path
    assert sc.timeout == 60.0
    assert sc.actors == ["driver"]
    assert sc.rooms["main"].members == ["driver"]
    send, reply = sc.steps
    assert isinstance(send, Send)
    assert (send.actor, send.room, send.mention, send.id) == ("driver", "main", "bot", "ask")
    assert "{token}" in send.body
    assert isinstance(reply, ExpectReply)
    assert (reply.to, reply.body, reply.top_level) == ("ask", "{token}", True)
    assert sc.in_profile("fast") and sc.in_profile("all") and not sc.in_profile("slow")


# --- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("60s", 60.0),
        ("1500ms", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 30 s ", 30.0),
        (45, 45.0),
        (0.25, 0.25),
        ("10", 10.0),
    ],
)
def test_parse_duration(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "abc", "5x", "-1s", "0s", 0, True, False, None, [1], float("inf"), "1m30s"])
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


# --- error locations ---------------------------------------------------------------------------------------


def test_unknown_field_in_step(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send: {as: driver, body: hi, id: a}
        - send:
            as: driver
            bdy: hello
        """,
    )
    # A misspelt required field is two facts, and both are reported: body is missing, bdy is unknown.
    missing, err = validate_paths([path])
    assert (missing.line, missing.field, missing.message) == (7, "steps[1].send.body", "required field missing")
    assert (err.path, err.line, err.column) == (path, line_of(path, "bdy:"), 5)
    assert err.field == "steps[1].send.bdy"
    assert "unknown field" in err.message and "did you mean 'body'" in err.message
    assert "as, room, body" in err.message  # lists the YAML spelling `as`, not the Python name
    assert str(err).startswith(f"{path}:{err.line}:5: steps[1].send.bdy: unknown field")


def test_unknown_step_type(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n- sned: {as: driver, body: hi}\n")
    err = only_error(path)
    assert (err.line, err.column, err.field) == (6, 3, "steps[1]")
    assert "unknown step type 'sned'" in err.message
    assert "did you mean 'send'" in err.message
    for kind in ("send", "expect_reply", "expect_no_reply", "react", "restart_bot", "approve"):
        assert kind in err.message


def test_step_with_misplaced_id(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n  id: x\n")
    err = only_error(path)
    assert err.field == "steps[0]"
    assert "id must be indented under send" in err.message


def test_bad_duration(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send: {as: driver, body: hi, id: a}
        - expect_reply: {to: a, timeout: 5 minutes}
        """,
    )
    err = only_error(path)
    assert err.field == "steps[1].expect_reply.timeout"
    assert (err.line, err.column) == (6, 34)  # the value itself
    assert "invalid duration '5 minutes'" in err.message


def test_bad_scenario_timeout(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", extra="timeout: soon\n")
    err = only_error(path)
    assert (err.line, err.column, err.field) == (4, 10, "timeout")


def test_step_timeout_longer_than_scenario(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, "- send: {as: driver, body: hi, id: a}\n- expect_reply: {to: a, timeout: 2m}\n", extra="timeout: 1m\n"
    )
    err = only_error(path)
    assert err.field == "steps[1].expect_reply.timeout"
    assert "longer than the scenario timeout" in err.message


def test_missing_required_id_points_at_parent_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "noid.yaml",
        """\
        # a comment first, so the mapping starts on line 2
        title: No id
        profiles: [fast]
        steps:
          - send: {as: driver, body: hi}
        """,
    )
    err = only_error(path)
    assert (err.line, err.column, err.field) == (2, 1, "id")
    assert err.message == "required field missing"


def test_missing_field_inside_step(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n- react:\n    as: driver\n    key: x\n")
    err = only_error(path)
    assert err.field == "steps[1].react.to"
    assert err.line == 7  # the `as:` line, where react's mapping begins


def test_reference_to_undefined_step(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi, id: ask}\n- expect_reply: {to: nope}\n")
    err = only_error(path)
    assert (err.line, err.field) == (6, "steps[1].expect_reply.to")
    assert "unknown step id 'nope'" in err.message and "ask" in err.message


def test_reference_to_later_step(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - expect_reply: {to: ask}
        - send: {as: driver, body: hi, id: ask}
        """,
    )
    err = only_error(path)
    assert (err.line, err.column, err.field) == (5, 22, "steps[0].expect_reply.to")
    assert "defined by a later step (steps[1])" in err.message


def test_reference_of_wrong_kind(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send: {as: driver, body: hi, id: ask}
        - react: {as: driver, to: ask, key: x, id: r1}
        - expect_reply: {to: r1}
        """,
    )
    err = only_error(path)
    assert err.field == "steps[2].expect_reply.to"
    assert "'r1' is a reaction" in err.message


def test_duplicate_step_id(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: a, id: x}\n- send: {as: driver, body: b, id: x}\n")
    err = only_error(path)
    assert (err.line, err.field) == (6, "steps[1].send.id")
    assert "duplicate step id 'x' (first defined by steps[0])" in err.message


def test_undeclared_actor(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send: {as: driver, body: hi, id: a}
        - send: {as: observer, body: hi}
        """,
    )
    err = only_error(path)
    assert (err.line, err.column, err.field) == (6, 14, "steps[1].send.as")
    assert "unknown actor 'observer'" in err.message and "driver" in err.message


def test_bot_cannot_act_but_can_be_mentioned(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: bot, body: hi}\n- send: {as: driver, body: hi, mention: bot}\n")
    err = only_error(path)
    assert err.field == "steps[0].send.as"


def test_actor_not_in_room(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        "- send: {as: observer, room: side, body: hi}\n",
        extra="actors: [driver, observer]\nrooms:\n  main: {}\n  side: {members: [driver]}\n",
    )
    err = only_error(path)
    assert err.field == "steps[0].send.as"
    assert "not a member of room 'side'" in err.message


def test_undeclared_room(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, room: lobby, body: hi}\n")
    err = only_error(path)
    assert err.field == "steps[0].send.room"
    assert "unknown room 'lobby'" in err.message


def test_thread_root_in_another_room(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        "- send: {as: driver, room: side, body: root, id: r}\n- send: {as: driver, body: hi, thread: r}\n",
        extra="rooms: {main: {}, side: {}}\n",
    )
    err = only_error(path)
    assert err.field == "steps[1].send.thread"
    assert "in room 'side'" in err.message


def test_duplicate_key(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send:
            as: driver
            body: one
            body: two
        """,
    )
    err = only_error(path)
    assert (err.line, err.column, err.field) == (8, 5, "steps[0].send.body")
    assert err.message == "duplicate key (first at line 7)"
    with pytest.raises(ScenarioError):
        load_scenario(path)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "id: x\ntitle: [unclosed\nprofiles: [fast]\n")
    err = only_error(path)
    assert err.path == path and err.line is not None and err.line >= 2
    assert err.message.startswith("YAML syntax error:")
    assert str(err).startswith(f"{path}:{err.line}:")


def test_invalid_marker_in_body(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: 'say {tokn}'}\n")
    err = only_error(path)
    assert err.field == "steps[0].send.body"
    assert "unknown marker {tokn}" in err.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty file"),
        ("# only a comment\n", "empty file"),
        ("- id: a\n- id: b\n", "found a list"),
        ("just a string\n", "found str"),
        ("id: a\n---\nid: b\n", "several YAML documents"),
    ],
)
def test_file_shape_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, "shape.yaml", text)
    err = only_error(path)
    assert needle in err.message


def test_expect_no_reply_requires_evidence(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi, id: a}\n- expect_no_reply: {to: a}\n")
    err = only_error(path)
    assert err.field == "steps[1].expect_no_reply"
    assert "needs evidence" in err.message


# --- bot config --------------------------------------------------------------------------------------------


def test_allow_bots_bare_off_is_off(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        "- send: {as: driver, body: hi}\n",
        extra="bot:\n  requireMention: false\n  allowBots: off\n  knownBots: [other]\nactors: [driver, other]\n",
    )
    sc = load_scenario(path)
    assert sc.bot.allow_bots == "off"
    assert sc.bot.require_mention is False
    assert sc.bot.known_bots == ["other"]


@pytest.mark.parametrize("value", ["mentions", "all"])
def test_allow_bots_values(tmp_path: Path, value: str) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", extra=f"bot: {{allowBots: {value}}}\n")
    assert load_scenario(path).bot.allow_bots == value


def test_allow_bots_on_is_rejected(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", extra="bot: {allowBots: on}\n")
    err = only_error(path)
    assert (err.line, err.field) == (4, "bot.allowBots")
    assert "ambiguous" in err.message


def test_bot_config_snake_case_key_is_unknown_field(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", extra="bot: {sessionWriteLock: {stale: 5}}\n")
    err = only_error(path)
    assert err.field == "bot.sessionWriteLock.stale"
    assert "staleMs" in err.message


def test_allowlist_names_must_be_actors(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", extra="bot: {allowlist: [driver, eve]}\n")
    err = only_error(path)
    assert err.field == "bot.allowlist[1]"


# --- full step vocabulary ----------------------------------------------------------------------------------


def test_every_step_type_parses(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """\
        - send: {as: driver, body: "thread root", id: root}
        - send: {as: driver, mention: bot, thread: root, body: "marker {token}", id: ask}
        - expect_reply: {to: ask, body: "{token}", thread: root, timeout: 30s, id: answer}
        - react: {as: observer, to: answer, key: "👍", id: r1}
        - expect_reaction: {as: driver, by: observer, to: answer, key: "👍"}
        - send: {as: driver, body: "no mention", id: quiet}
        - expect_no_reply:
            to: quiet
            reason: mention-required
            control: {as: driver, body: "marker {token2}", mention: bot, expect_body: "{token2}"}
        - expect_trace: {type: inbound, to: quiet, match: {reason: mention-required}, timeout: 1500ms}
        - restart_bot: {mode: kill}
        - restart_homeserver:
        - approve: {as: driver, to: answer, decision: allow-once}
        """,
        extra="actors: [driver, observer]\n",
    )
    sc = load_scenario(path)
    kinds = [s.kind for s in sc.steps]
    assert kinds == [
        "send",
        "send",
        "expect_reply",
        "react",
        "expect_reaction",
        "send",
        "expect_no_reply",
        "expect_trace",
        "restart_bot",
        "restart_homeserver",
        "approve",
    ]
    assert isinstance(sc.steps[3], React) and sc.steps[3].actor == "observer"
    no_reply = sc.steps[6]
    assert isinstance(no_reply, ExpectNoReply) and no_reply.control is not None
    assert no_reply.control.expect_body == "{token2}"
    assert isinstance(sc.steps[8], RestartBot) and sc.steps[8].mode == "kill"
    assert isinstance(sc.steps[9], RestartHomeserver)
    assert sc.step_index("answer") == 2


def test_python_construction_uses_field_names() -> None:
    sc = Scenario.model_validate(
        {"id": "x", "title": "t", "profiles": ["fast"], "steps": [Send(actor="driver", body="hi", id="a")]}
    )
    assert sc.steps[0].defined_id() == "a"
    assert sc.source_path is None


# --- many files --------------------------------------------------------------------------------------------


def test_validate_paths_collects_errors_from_several_files(tmp_path: Path) -> None:
    good = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="a.yaml", sid="a")
    bad1 = scenario_file(tmp_path, "- send: {as: driver, body: hi, x: 1}\n- nope: {}\n", name="b.yaml", sid="b")
    bad2 = write(tmp_path, "c.yaml", "id: c\n")
    errors = validate_paths(tmp_path)
    assert {e.path for e in errors} == {bad1, bad2}
    assert good not in {e.path for e in errors}
    assert len([e for e in errors if e.path == bad1]) == 2  # both problems in b.yaml, not just the first
    # profiles: may be left out (issue 25: an author's own scenario then runs in every profile)
    assert {e.field for e in errors if e.path == bad2} == {"title", "steps"}
    with pytest.raises(ScenarioErrors) as info:
        load_scenarios(tmp_path)
    assert len(info.value.errors) == len(errors)
    assert isinstance(info.value, ConfigError)
    assert len(str(info.value).splitlines()) == len(errors)


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    first = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="a.yaml", sid="same")
    second = scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="b.yaml", sid="same")
    errors = validate_paths([tmp_path])
    assert len(errors) == 1
    err = errors[0]
    assert (err.path, err.line, err.field) == (second, 1, "id")
    assert f"also in {first}:1" in err.message


def test_plan_order_is_file_name_with_canary_first(tmp_path: Path) -> None:
    scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="a-first.yaml", sid="alpha")
    scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="z-canary.yaml", sid="canary")
    scenario_file(tmp_path, "- send: {as: driver, body: hi}\n", name="m.yml", sid="middle")
    (tmp_path / "notes.txt").write_text("not a scenario")
    scenarios = load_scenarios(tmp_path)
    assert [s.id for s in scenarios] == ["canary", "alpha", "middle"]
    assert all(s.source_path is not None and s.source_path.parent == tmp_path for s in scenarios)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    errors = validate_paths([tmp_path / "nope.yaml", empty])
    assert [e.path for e in errors] == [tmp_path / "nope.yaml", empty]


def test_field_path() -> None:
    assert field_path(("steps", 1, "send", "body")) == "steps[1].send.body"
    assert field_path(("bot", "allowlist", 0)) == "bot.allowlist[0]"
    assert field_path(()) == ""
