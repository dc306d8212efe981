"""Bots without a model: the say-able prompt, the bot file's `say` template, and the `model` capability a
scenario needs when a `say` command cannot stand in for its prompts (docs/bot-file.md, "Bots without a model")."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from qa.harness.botfile import BotFile, load_bot_file
from qa.harness.capabilities import missing, needs, say_marker, skip_reason
from qa.kernel.errors import ConfigError
from qa.scenario.loader import load_scenarios
from qa.scenario.schema import Scenario
from qa.scenario.steps.common import prompt
from qa.shared.markers import MarkerFactory

ASK = "reply with only this exact marker: {token}"


@pytest.mark.parametrize(("body", "marker"), [
    (ASK, "{token}"), ("reply with only this exact marker: {token2}", "{token2}"),
    ("reply with only this exact marker: {token9}", "{token9}"),
    # Anything else asks a model for more than a marker, or for the marker among other words.
    ("reply with only this exact marker: {token10}", None), ("reply with only this exact marker: {token} now", None),
    ("!status reply with only this exact marker: {token}", None), ("reply with only this exact marker: x", None),
    ("slow reply with marker: {token}", None), ("Reply with only this exact marker: {token}", None), ("", None),
])
def test_a_say_able_prompt_is_the_marker_sentence_and_nothing_else(body: str, marker: str | None) -> None:
    assert say_marker(body) == marker


def test_a_say_template_names_text_once_and_means_no_model() -> None:
    bot = BotFile(name="b", command=["x"], say="!echo {text}", capabilities=["threads"])
    assert bot.say_text("MARK") == "!echo MARK"
    assert not bot.has("model") and bot.abilities() == ["threads"]
    plain = BotFile(name="b", command=["x"], capabilities=["threads"])
    assert plain.has("model") and plain.abilities() == ["threads", "model"]
    assert not plain.has("trace") and not bot.has("trace") and bot.has("threads")
    claimed = BotFile(name="b", command=["x"], capabilities=["model", "trace"])
    assert claimed.abilities() == ["model", "trace"]
    with pytest.raises(AssertionError):
        plain.say_text("MARK")


@pytest.mark.parametrize(("line", "expected"), [
    ('say: "!echo"', "say: say needs {text} exactly once"),
    ('say: "{text} {text}"', "say: say needs {text} exactly once"),
    ('say: "!echo {text}"\ncapabilities: [model]', "say is for a bot without a model, and capabilities claims `model`"),
])
def test_a_bad_say_template_is_one_clear_error(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(f"name: b\ncommand: [x]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_bot_file(path)
    assert str(err.value).startswith(f"{path}:") and expected in str(err.value)


def _ctx(bot: BotFile) -> SimpleNamespace:
    return SimpleNamespace(bot=SimpleNamespace(bot=bot), markers=MarkerFactory("seed"))


def test_a_bot_without_a_model_is_sent_its_say_command_for_a_say_able_prompt() -> None:
    say = _ctx(BotFile(name="b", command=["x"], say="!echo {text}"))
    token = say.markers["token"]
    assert prompt(say, ASK) == f"!echo {token}"  # type: ignore[arg-type]
    assert prompt(say, "thread root {token}") == f"thread root {token}"  # type: ignore[arg-type]
    model = _ctx(BotFile(name="b", command=["x"]))
    assert prompt(model, ASK) == f"reply with only this exact marker: {token}"  # type: ignore[arg-type]


def _scenario(tmp_path: Path, text: str) -> object:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\n" + text)
    return load_scenarios([path])[0]


def _model_needs(scenario: object) -> list[str]:
    return [n.why for n in needs(scenario) if n.capability == "model"]


def test_say_able_prompts_and_unanswered_messages_need_no_model(tmp_path: Path) -> None:
    s = _scenario(tmp_path, f"""steps:
  - send: {{as: driver, body: "thread root", id: root}}
  - send: {{as: driver, mention: bot, thread: root, body: "{ASK}", id: a}}
  - expect_reply: {{to: a, body: "{{token}}", thread: root}}
  - expect_reply_count: {{to: root, count: 0}}
  - expect_no_reply: {{to: root, control: {{as: driver, body: "reply with only this exact marker: {{token2}}"}}}}
""")
    assert _model_needs(s) == []


def test_a_skip_names_the_first_step_that_needs_a_model(tmp_path: Path) -> None:
    s = _scenario(tmp_path, """steps:
  - send: {as: driver, mention: bot, body: "run this: {token}", id: a}
  - expect_model_request: {to: a, contains: ["{token}"]}
  - expect_reply: {to: a}
""")
    assert skip_reason("cmd", missing(s, [])) == "skipped: bot 'cmd' lacks 'model' (step 2 (expect_model_request))"
    assert missing(s, ["model"]) == []


@pytest.mark.parametrize(("steps", "why"), [
    ('  - send: {as: driver, body: "hi", id: a}\n  - expect_reply: {to: a}\n',
     "step 2 (expect_reply): an answer to step 1, a prompt only a model answers (not say-able)"),
    ('  - send: {as: driver, body: "hi", id: a}\n  - expect_reply_count: {to: a, count: 1}\n',
     "step 2 (expect_reply_count): an answer to step 1, a prompt only a model answers (not say-able)"),
    ('  - send: {as: driver, body: "hi", id: a}\n  - expect_no_reply: {to: a, control: {as: driver, body: ok}}\n',
     "step 2 (expect_no_reply): the control message is a prompt only a model answers (not say-able)"),
    ('  - send: {as: driver, body: "' + ASK + '", id: a}\n  - expect_model_request: {to: a, contains: [x]}\n',
     "step 2 (expect_model_request)"),
    ("  - expect_faults: {rule: x, source: provider}\n",
     "step 1 (expect_faults): source: provider (a mock-provider fault)"),
    ('  - send: {as: driver, body: "' + ASK + '", id: a}\n  - approve: {as: driver, to: a, decision: deny}\n',
     "step 2 (approve)"),
])
def test_each_source_of_a_model_need(tmp_path: Path, steps: str, why: str) -> None:
    assert _model_needs(_scenario(tmp_path, "steps:\n" + steps)) == [why]


def test_provider_rules_need_a_model() -> None:
    s = Scenario.model_validate({"id": "s", "title": "t", "provider": {"rules": ["fixtures/mock-provider/x.yaml"]},
                                 "steps": [{"send": {"as": "driver", "body": "hi"}}]})
    assert _model_needs(s) == ["provider.rules"]


def test_homeserver_faults_need_no_model(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "faults: [{name: x, path: /send/, status: 500}]\n"
                            "steps:\n  - expect_faults: {rule: x}\n")
    assert _model_needs(s) == []


def test_every_built_in_scenario_runs_for_the_command_bot_or_names_what_it_lacks() -> None:
    """The mautrix command bot (tests/bots, `say:` and no model): at least 25 built-in scenarios are its to run;
    every other one is skipped with a line naming a capability and the step or setting that needs it."""
    repo = Path(__file__).resolve().parents[2]
    bot = load_bot_file(repo / "tests" / "bots" / "mautrix-command-bot.yaml")
    runnable, skipped = [], {}
    for scenario in load_scenarios([repo / "scenarios"]):
        reason = skip_reason(bot.name, missing(scenario, bot.abilities(), bot.state_mutations))
        if reason is None:
            runnable.append(scenario.id)
        else:
            skipped[scenario.id] = reason
    assert len(runnable) >= 25, runnable
    assert {"canary", "matrix-mention-gating", "matrix-thread-nested-reply-shape"} <= set(runnable)
    for scenario_id, reason in skipped.items():
        assert reason.startswith("skipped: bot 'mautrix-command-bot' lacks '"), (scenario_id, reason)
    needing_a_model = [i for i, r in skipped.items() if "'model' (" in r]
    assert "matrix-restart-resume" in needing_a_model and "matrix-provider-429-retry-after" in needing_a_model
