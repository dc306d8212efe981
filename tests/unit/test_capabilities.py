"""What a scenario needs of a bot, and the skip line a bot that lacks it gets."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import get_args

import pytest

from qa.harness.capabilities import MEANING, Capability, Need, missing, needs, skip_reason
from qa.kernel.errors import ConfigError
from qa.scenario.loader import load_scenarios

REPO = Path(__file__).resolve().parents[2]
# A say-able prompt (qa.harness.capabilities.say_marker): answering it needs no model.
ASK = "'reply with only this exact marker: {token}'"


def _scenario(tmp_path: Path, body: str) -> object:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\nprofiles: [fast]\n" + body)
    return load_scenarios([path])[0]


def test_a_plain_conversation_needs_nothing(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, mention: bot, id: a,\n"
                            "          body: " + ASK + "}\n"
                            "  - expect_reply: {to: a}\n")
    assert needs(s) == []
    assert skip_reason("b", missing(s, [])) is None


def test_steps_and_settings_imply_what_they_need(tmp_path: Path) -> None:
    s = _scenario(tmp_path, """
rooms: {main: {encrypted: true}}
bot: {allowlist: [driver], sessionWriteLock: {scope: attempt}}
steps:
  - send: {as: driver, body: root, id: root}
  - send: {as: driver, mention: bot, thread: root, body: "reply with only this exact marker: {token}", id: a}
  - expect_reply: {to: a, thread: root, id: r}
  - restart_bot: {}
  - react: {as: driver, to: r, key: x}
  - expect_reaction: {as: driver, by: driver, to: r}
  - expect_trace: {type: lock.acquire}
  - expect_no_reply: {to: a, reason: mention-required}
""")
    got = {n.capability: n.why for n in needs(s)}
    assert got == {
        "trace": "step 6 (expect_reaction)",
        "threads": "step 2 (send)",
        "restart": "step 4 (restart_bot)",
        "e2ee": "encrypted room",
        "reactions": "step 6 (expect_reaction)",
        "policy": "bot.allowlist",
        "lock": "bot.sessionWriteLock",
    }


def test_declared_requirements_come_first_and_only_once(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "requires: [approvals, restart]\nsteps:\n  - restart_bot: {}\n")
    assert [(n.capability, n.why) for n in needs(s)] == [("restart", "requires:"), ("approvals", "requires:")]


def test_silence_without_a_control_needs_the_trace(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, body: hi, id: a}\n"
                            "  - expect_no_reply: {to: a, reason: mention-required}\n")
    assert [n.capability for n in needs(s)] == ["trace"]
    with_control = _scenario(tmp_path, "steps:\n  - send: {as: driver, body: hi, id: a}\n"
                                       "  - expect_no_reply: {to: a, control: {as: driver, body: " + ASK + "}}\n")
    assert needs(with_control) == []


def test_policy_is_needed_only_for_settings_that_differ_from_the_defaults(tmp_path: Path) -> None:
    for bot, needed in (("{requireMention: true}", False), ("{requireMention: false}", True),
                        ("{allowBots: mentions}", True), ("{knownBots: [driver]}", True), ("{allowlist: []}", True)):
        s = _scenario(tmp_path, f"bot: {bot}\nsteps:\n  - send: {{as: driver, body: hi}}\n")
        assert ("policy" in [n.capability for n in needs(s)]) is needed, bot


def test_skip_reason_names_each_missing_capability_and_why(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - restart_bot: {}\n  - expect_trace: {type: ready}\n")
    lacking = missing(s, ["restart"])
    assert skip_reason("nio-bot", lacking) == "skipped: bot 'nio-bot' lacks 'trace' (step 2 (expect_trace))"
    assert skip_reason("nio-bot", missing(s, [])) == ("skipped: bot 'nio-bot' lacks 'trace' (step 2 (expect_trace)), "
                                                      "'restart' (step 1 (restart_bot))")
    assert missing(s, ["restart", "trace"]) == []


def test_the_library_splits_into_generic_and_trace_only_scenarios() -> None:
    scenarios = {s.id: s for s in load_scenarios([REPO / "scenarios"])}
    generic = {i for i, s in scenarios.items() if not missing(s, ["model", "threads", "restart"])}
    assert {"canary", "matrix-mention-gating", "matrix-thread-follow-up", "matrix-top-level-reply-shape",
            "matrix-thread-isolation", "matrix-restart-resume"} <= generic
    for trace_only in ("matrix-reaction-notification", "matrix-session-lock-contention",
                       "matrix-approval-exec-deny", "matrix-allowlist-block"):
        assert trace_only not in generic


def _steps(tmp_path: Path, *steps: str, head: str = "") -> object:
    return _scenario(tmp_path, head + "steps:\n" + "".join(f"  - {s}\n" for s in steps))


def test_every_capability_can_be_required_and_nothing_else(tmp_path: Path) -> None:
    # The alias types `requires:` here and `capabilities:` in a bot file; its order is the order of needs().
    assert get_args(Capability) == tuple(MEANING)
    s = _steps(tmp_path, "send: {as: driver, body: hi}", head=f"requires: [{', '.join(get_args(Capability))}]\n")
    assert [(n.capability, n.why) for n in needs(s)] == [(c, "requires:") for c in MEANING]
    with pytest.raises(ConfigError, match="requires"):
        _steps(tmp_path, "send: {as: driver, body: hi}", head="requires: [telepathy]\n")


@pytest.mark.parametrize("step", ["stop_bot: {mode: graceful}", "start_bot: {}", "restart_bot: {}"])
def test_stopping_or_starting_the_bot_needs_restart(tmp_path: Path, step: str) -> None:
    kind = step.split(":")[0]
    assert [(n.capability, n.why) for n in needs(_steps(tmp_path, step))] == [("restart", f"step 1 ({kind})")]


@pytest.mark.parametrize("step", ["expect_approval: {to: ask, state: pending}",
                                  "approve: {as: driver, to: ask, decision: allow-once}"])
def test_approval_steps_need_approvals_and_the_trace(tmp_path: Path, step: str) -> None:
    s = _steps(tmp_path, "send: {as: driver, mention: bot, body: run it, id: ask}", step)
    kind = step.split(":")[0]
    assert [(n.capability, n.why) for n in needs(s)] == [("trace", f"step 2 ({kind})"),
                                                          ("approvals", f"step 2 ({kind})"),
                                                          ("model", f"step 2 ({kind})")]


def test_a_lock_trace_step_needs_lock_and_another_trace_step_does_not(tmp_path: Path) -> None:
    s = _steps(tmp_path, "expect_trace: {type: ready}", "expect_trace: {type: lock.acquire}")
    assert [(n.capability, n.why) for n in needs(s)] == [("trace", "step 1 (expect_trace)"),
                                                          ("lock", "step 2 (expect_trace)")]


def test_a_reaction_by_the_bot_needs_nothing_but_one_recorded_by_it_does(tmp_path: Path) -> None:
    head = ["send: {as: driver, mention: bot, body: " + ASK + ", id: a}", "expect_reply: {to: a, id: r}"]
    by_bot = _steps(tmp_path, *head, "expect_reaction: {as: driver, by: bot, to: r}")
    assert needs(by_bot) == []
    by_driver = _steps(tmp_path, *head, "react: {as: driver, to: r, key: x}",
                       "expect_reaction: {as: driver, by: driver, to: r}")
    assert [n.capability for n in needs(by_driver)] == ["trace", "reactions"]


def test_silence_without_a_control_says_why_only_the_trace_proves_it(tmp_path: Path) -> None:
    s = _steps(tmp_path, "send: {as: driver, body: hi, id: a}", "expect_no_reply: {to: a, reason: mention-required}")
    assert skip_reason("b", missing(s, [])) == (
        "skipped: bot 'b' lacks 'trace' (step 2 (expect_no_reply): only the trace can prove this silence "
        "(no control message))")


def test_a_control_message_in_a_thread_needs_threads(tmp_path: Path) -> None:
    s = _steps(tmp_path, "send: {as: driver, body: root, id: root}", "send: {as: driver, body: hi, id: a}",
               "expect_no_reply: {to: a, control: {as: driver, body: " + ASK + ", thread: root}}")
    assert [(n.capability, n.why) for n in needs(s)] == [("threads", "step 3 (expect_no_reply)")]


@pytest.mark.parametrize(("bot", "why"), [("{requireMention: false}", "bot.requireMention"),
                                          ("{allowBots: all}", "bot.allowBots"),
                                          ("{knownBots: [driver]}", "bot.knownBots")])
def test_a_policy_need_names_the_setting_as_the_scenario_spells_it(tmp_path: Path, bot: str, why: str) -> None:
    s = _steps(tmp_path, "send: {as: driver, body: hi}", head=f"bot: {bot}\n")
    assert [(n.capability, n.why) for n in needs(s)] == [("policy", why)]


def test_a_need_cannot_be_rewritten() -> None:
    with pytest.raises(FrozenInstanceError):
        Need("trace", "requires:").why = "other"  # type: ignore[misc]


def test_message_steps_and_settings_imply_redactions_trace_and_policy(tmp_path: Path) -> None:
    s = _scenario(tmp_path, """
bot: {threadReplies: always}
steps:
  - send: {as: driver, mention: bot, body: 'reply with only this exact marker: {token}', id: a}
  - edit: {as: driver, to: a, body: changed}
  - expect_reply: {to: a, parts_min: 2}
  - redact: {as: driver, to: a, id: gone}
  - expect_redaction: {as: driver, to: gone}
""")
    got = {n.capability: n.why for n in needs(s)}
    assert got == {
        "trace": "step 3 (expect_reply): the parts of a split reply are listed in the trace (reply.parts)",
        "policy": "bot.threadReplies",
        "redactions": "step 4 (redact)",
    }


def test_an_edit_and_a_whole_reply_need_nothing_more(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, mention: bot, body: " + ASK + ", id: a}\n"
                            "  - edit: {as: driver, to: a, mention: bot, body: again}\n"
                            "  - expect_reply: {to: a, body_excludes: [x]}\n")
    assert needs(s) == []


@pytest.mark.parametrize("check", ["formatted_safe: true", "formatted_contains: [x]", "formatted_excludes: [x]"])
def test_formatting_checks_need_markdown(tmp_path: Path, check: str) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, mention: bot, body: " + ASK + ", id: a}\n"
                            f"  - expect_reply: {{to: a, {check}}}\n")
    assert [(n.capability, n.why) for n in needs(s)] == [("markdown", "step 2 (expect_reply)")]


def test_expect_redaction_alone_needs_redactions_and_trace(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, body: hi, id: a}\n"
                            "  - redact: {as: driver, to: a, id: gone}\n"
                            "  - expect_redaction: {as: driver, to: gone}\n")
    assert {n.capability: n.why for n in needs(s)} == {"trace": "step 3 (expect_redaction)",
                                                       "redactions": "step 2 (redact)"}


def test_each_named_state_mutation_the_bot_file_lacks_is_missing_once(tmp_path: Path) -> None:
    s = _steps(tmp_path, "stop_bot: {}", "mutate_bot_state: {mutation: rewind}", "mutate_bot_state: {mutation: wipe}",
               "mutate_bot_state: {mutation: rewind}", "start_bot: {}")
    assert missing(s, ["restart"], ["rewind", "wipe"]) == []
    assert missing(s, ["restart"], ["wipe"]) == [Need("state mutation rewind", "step 2 (mutate_bot_state)")]
    assert missing(s, [], []) == [Need("restart", "step 1 (stop_bot)"),
                                  Need("state mutation rewind", "step 2 (mutate_bot_state)"),
                                  Need("state mutation wipe", "step 3 (mutate_bot_state)")]


# What the report tells a reader each capability means ("Skipped for what the bot lacks: `lock` keeps …"), word for
# word: qa.run.record copies MEANING into the summary, so changing a text changes what users read; this table is
# where that change is made on purpose.
DESCRIBED = {
    "trace": "writes the matrix-qa trace to $MATRIX_QA_TRACE_FILE (docs/trace-format.md)",
    "threads": "answers inside Matrix threads",
    "restart": "keeps its state in $MATRIX_QA_STATE_DIR across a restart or a crash",
    "approvals": "asks for exec approvals and takes decisions by reaction",
    "e2ee": "talks in end-to-end encrypted rooms",
    "reactions": "records reactions to its messages (trace `reaction` records)",
    "policy": "takes the scenario's bot: settings (requireMention, allowlist, allowBots, knownBots, threadReplies) "
              "from the launch",
    "lock": "keeps transcripts under a session write lock and traces its holds and model requests",
    "media": "takes attachments (m.image/m.audio/m.video/m.file), images to the model, and a mediaMaxBytes limit",
    "streaming": "streams answers as an edited draft (bot.streaming partial|quiet, toolProgress) from the launch",
    "verification": "takes part in to-device SAS verification, traces its SAS and outcome, and can share room "
                    "keys with verified devices only (bot.roomKeys)",
    "membership": "joins rooms it is invited to at run time (bot.autoJoin: always|allowlist|off, "
                  "autoJoinAllowlist) and stops serving a room it was kicked from",
    "hot-reload": "rereads its rendered config on SIGHUP and traces `config.reload` {generation, ok} "
                  "(template variable config_generation)",
    "redactions": "never answers a redaction (trace `inbound`, reason `redaction`) and records a removed reaction "
                  "in its session (trace `reaction.removed`)",
    "markdown": "sends the model's markdown as org.matrix.custom.html (formatted_body) beside the plain body",
    "exec-dir": "runs its exec tool's commands in $MATRIX_QA_EXEC_DIR (their working directory), where the harness "
                "sees the files a command made",
    "model": "answers prompts through a model (the mock provider's journal, rules, faults and tools); every bot "
             "file without a `say` template has it",
    "agent-wording": "words its notices as the embedded agent does (\"HTTP 500 after 3 attempts\", \"no answer in "
                     "time\"): an expect_reply `wording` is checked; without it the notice is judged by behaviour",
    "model-timeout": "gives up on a model request after the launch's timeout (bot.modelTimeout: "
                     "$MATRIX_QA_MODEL_TIMEOUT_S, template provider.timeout_s) rather than its own",
    "appservice": "is an application service (bot file `appservice:`, never claimed in `capabilities`): the "
                  "homeserver pushes it transactions through the harness, where `target: push` faults act",
    "room-key-trace": "traces `e2ee.room_key` {roomId, sender, sessionId} once it holds a room key sent to it "
                      "and its sync position is saved past the key, so the server will not send it again "
                      "(share_room_key waits for it; without it that wait is NOT CHECKED)",
}


def test_each_capability_a_skip_names_is_explained_to_the_reader_word_for_word(tmp_path: Path) -> None:
    from qa.report.markdown import lacking_meanings, render_markdown
    from qa.report.summary import BotInfo, ScenarioResult
    from tests.unit.test_report_render import make_summary

    assert MEANING == DESCRIBED
    s = _steps(tmp_path, "send: {as: driver, body: hi}", head=f"requires: [{', '.join(get_args(Capability))}]\n")
    reason = skip_reason("echo", missing(s, []))
    assert reason is not None
    summary = make_summary([ScenarioResult(id="s", title="t", status="skip", details=reason)])
    # What qa.run.record writes for every run with a bot file.
    summary.environment.bot = BotInfo(name="echo", source="echo.yaml", ready="joined",
                                      capabilityMeanings=dict(MEANING))
    assert lacking_meanings(summary) == list(DESCRIBED.items())  # every name survives the skip line's parsing
    legend = next(line for line in render_markdown(summary).splitlines() if "Skipped for what the bot lacks" in line)
    for name, meaning in DESCRIBED.items():
        assert f"`{name}` {meaning}" in legend


def test_the_documented_capabilities_are_the_described_ones() -> None:
    # docs/bot-file.md's `capabilities` row lists each claimable name; a new or renamed one is documented too.
    row = next(line for line in (REPO / "docs" / "bot-file.md").read_text().splitlines()
               if line.startswith("| `capabilities` |"))
    listed = row.split("what the bot claims:", 1)[1].split("(", 1)[0]
    assert sorted(name.strip(" `,") for name in listed.split(", ")) == sorted(DESCRIBED)
