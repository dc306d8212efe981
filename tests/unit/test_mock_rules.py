"""Rule matching and rule-file validation of the mock provider, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qa.provider.rules import (
    DEFAULT_FALLBACK_TEXT,
    ChatRequest,
    Message,
    RuleFileError,
    decide,
    load_default_rules,
    load_rules,
    parse_rules,
)


def user(text: str) -> ChatRequest:
    return ChatRequest([Message("system", "You are a bot."), Message("user", text)])


@pytest.mark.parametrize(
    ("prompt", "marker"),
    [
        ("reply with only this exact marker: MQA-7f3a9c21", "MQA-7f3a9c21"),
        ("Please reply with only this exact marker: MQA-7f3a9c21.", "MQA-7f3a9c21"),
        ("@bot:hs reply with only this exact marker: MQA-7f3a9c21, thanks", "MQA-7f3a9c21"),
        ("reply with only this exact marker: `MQA-7f3a9c21`!", "MQA-7f3a9c21"),
        ('reply with only this exact marker: "MQA-7f3a9c21"...', "MQA-7f3a9c21"),
        ("Reply With Only This Exact Marker:   MQA-7f3a9c21\nand nothing else", "MQA-7f3a9c21"),
        ("reply with only this exact marker: v1.2.3-rc1", "v1.2.3-rc1"),
    ],
)
def test_builtin_marker_takes_the_next_token_without_trailing_punctuation(prompt: str, marker: str) -> None:
    decision = decide(load_default_rules(), user(prompt))
    assert decision.rule_name == "exact-marker"
    assert decision.reply is not None
    assert decision.reply.text == marker
    assert decision.latency_ms == 0


def test_builtin_slow_marker_has_latency() -> None:
    decision = decide(load_default_rules(), user("slow reply with marker: MQA-00aa11bb"))
    assert decision.rule_name == "slow-marker"
    assert decision.reply is not None and decision.reply.text == "MQA-00aa11bb"
    assert decision.latency_ms == 1500


def test_builtin_exec_command_becomes_a_tool_call_with_json_arguments() -> None:
    decision = decide(load_default_rules(), user('run this exact command: echo "a b" | tr a-z A-Z  '))
    assert decision.rule_name == "exec-command"
    assert decision.reply is not None and decision.reply.text is None
    [call] = decision.reply.tool_calls
    assert call.name == "exec"
    assert json.loads(call.arguments) == {"command": 'echo "a b" | tr a-z A-Z'}
    assert decision.reply.finish_reason == "tool_calls"


def test_tool_result_is_echoed_rather_than_calling_the_tool_again() -> None:
    request = ChatRequest(
        [
            Message("user", "run this exact command: echo hi"),
            Message("assistant", ""),
            Message("tool", "hi\n"),
        ]
    )
    decision = decide(load_default_rules(), request)
    assert decision.rule_name == "exec-result"
    assert decision.reply is not None
    assert decision.reply.text == "hi\n"
    assert decision.reply.tool_calls == []


def test_no_match_gives_the_fallback_text_not_an_error() -> None:
    decision = decide(load_default_rules(), user("hello there"))
    assert decision.rule is None
    assert decision.error is None
    assert decision.reply is not None and decision.reply.text == DEFAULT_FALLBACK_TEXT
    custom = decide([], user("hello"), fallback_text="nothing to see")
    assert custom.reply is not None and custom.reply.text == "nothing to see"


def test_first_match_wins_in_file_order_and_file_rules_precede_builtins() -> None:
    rules = (
        parse_rules(
            """
rules:
  - name: first
    match: {latest_user: "marker: (?P<m>\\\\S+)"}
    reply: {text: "first {m}"}
  - name: second
    match: {latest_user: "marker"}
    reply: {text: "second"}
"""
        )
        + load_default_rules()
    )
    decision = decide(rules, user("reply with only this exact marker: X1"))
    assert decision.rule_name == "first"
    assert decision.reply is not None and decision.reply.text == "first X1"


def test_conditions_are_all_required() -> None:
    [rule] = parse_rules(
        """
rules:
  - name: all
    match:
      latest_user: "go"
      any_message: "secret=(?P<secret>\\\\w+)"
      has_role: system
      last_role: user
      tool_offered: exec
    reply: {text: "{secret}/{{literal}}"}
"""
    )
    base = [Message("system", "secret=old"), Message("assistant", "secret=new"), Message("user", "go")]
    hit = rule.match_request(ChatRequest(base, tools=["exec"]))
    assert hit is not None and hit["secret"] == "new"  # the most recent message wins
    decision = decide([rule], ChatRequest(base, tools=["exec"]))
    assert decision.reply is not None and decision.reply.text == "new/{literal}"
    assert rule.match_request(ChatRequest(base, tools=[])) is None
    assert rule.match_request(ChatRequest(base[1:], tools=["exec"])) is None
    assert rule.match_request(ChatRequest([*base, Message("tool", "x")], tools=["exec"])) is None
    assert rule.match_request(ChatRequest([*base[:2], Message("user", "stop")], tools=["exec"])) is None


def test_tool_call_arguments_are_templated_deeply_and_json_escaped() -> None:
    [rule] = parse_rules(
        """
rules:
  - name: nested
    match: {latest_user: "say (?P<what>.+)"}
    reply:
      text: "calling"
      tool_calls:
        - {name: say, arguments: {text: "{what}", opts: {echo: ["{what}", 3, true]}}}
        - {name: log, arguments: {}}
"""
    )
    decision = decide([rule], user('say "quoted" \\ back'), call_id_prefix="call_x")
    assert decision.reply is not None
    first, second = decision.reply.tool_calls
    assert (first.id, second.id) == ("call_x_0", "call_x_1")
    what = '"quoted" \\ back'
    assert json.loads(first.arguments) == {"text": what, "opts": {"echo": [what, 3, True]}}
    assert json.loads(second.arguments) == {}
    assert decision.reply.text == "calling"


def test_error_rule_and_hold_name() -> None:
    rules = parse_rules(
        """
rules:
  - name: boom
    match: {latest_user: "fail (?P<why>\\\\w+)"}
    error: {status: 503, message: "overloaded: {why}"}
    latency_ms: 10
    hold: gate
  - name: held
    reply: {text: ok}
    hold: true
"""
    )
    decision = decide(rules, user("fail now"))
    assert decision.reply is None
    assert decision.error is not None
    assert (decision.error.status, decision.error.type, decision.error.message) == (
        503,
        "server_error",
        "overloaded: now",
    )
    assert decision.error.body()["error"].keys() == {"message", "type", "param", "code"}
    assert (decision.latency_ms, decision.hold) == (10, "gate")
    assert decide(rules, user("anything")).hold == "held"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'rules:\n  - name: ok\n    reply: {text: hi}\n  - name: bad-regex\n    match: {latest_user: "a("}\n'
            "    reply: {text: x}\n",
            ["broken.yaml:4: rules[1] (name 'bad-regex')", "match.latest_user", "invalid regex"],
        ),
        (
            "rules:\n  - name: nothing\n    match: {last_role: user}\n",
            ["rules[0] (name 'nothing')", "exactly one of reply or error"],
        ),
        (
            "rules:\n  - name: typo\n    reply: {text: hi}\n    latency: 100\n",
            ["broken.yaml:2: rules[0] (name 'typo')", "latency: unknown field (known: name, match, reply"],
        ),
        (
            'rules:\n  - name: ghost\n    match: {latest_user: "(?P<a>x)"}\n    reply: {text: "{b}"}\n',
            ["rules[0] (name 'ghost')", "reply.text uses {b}"],
        ),
        (
            "rules:\n  - name: neg\n    reply: {text: hi}\n    latency_ms: -5\n",
            ["rules[0] (name 'neg')", "latency_ms"],
        ),
        (
            "rules:\n  - name: err\n    error: {status: 200}\n",
            ["rules[0] (name 'err')", "error.status"],
        ),
        ("rules:\n  - reply: {text: hi}\n", ["rules[0]", "name", "Field required"]),
        (
            "rules:\n  - name: a\n    reply: {text: x}\n  - name: a\n    reply: {text: y}\n",
            ["rules[1]: duplicate rule name 'a' (first used by rules[0])"],
        ),
        ("rules: [\n", ["not valid YAML"]),
        ("- just a list\n", ["expected a mapping"]),
    ],
)
def test_malformed_rule_files_name_the_file_and_the_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RuleFileError) as info:
        load_rules(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_missing_rule_file_is_a_rule_file_error(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")


def test_default_rules_are_the_documented_builtins() -> None:
    names = [rule.name for rule in load_default_rules()]
    assert names == ["exec-result", "slow-marker", "exact-marker", "exec-command"]


EVERY_OTHER = """
rules:
  - name: flaky-marker
    every: 2
    match: {latest_user: "exact marker"}
    reply: {text: "not the marker"}
"""


def test_an_every_rule_answers_only_every_nth_match_and_lets_the_others_fall_through() -> None:
    rules = [*parse_rules(EVERY_OTHER), *load_default_rules()]
    hits: dict[int, int] = {}
    names = [decide(rules, user(f"reply with only this exact marker: MQA-{i}"), hits=hits).rule_name
             for i in range(4)]
    assert names == ["exact-marker", "flaky-marker", "exact-marker", "flaky-marker"]
    # A request the rule does not match is not counted.
    decide(rules, user("run this exact command: ls"), hits=hits)
    assert decide(rules, user("reply with only this exact marker: MQA-9"), hits=hits).rule_name == "exact-marker"


def test_an_every_rule_without_a_count_to_keep_never_applies() -> None:
    rules = [*parse_rules(EVERY_OTHER), *load_default_rules()]
    assert decide(rules, user("reply with only this exact marker: MQA-1")).rule_name == "exact-marker"


def test_every_below_two_is_refused_naming_the_rule() -> None:
    with pytest.raises(RuleFileError, match=r"flaky-marker.*every"):
        parse_rules(EVERY_OTHER.replace("every: 2", "every: 1"), "flaky.yaml")
