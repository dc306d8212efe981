"""What a scenario needs of a bot, and the skip line a bot that lacks it gets."""

from __future__ import annotations

from pathlib import Path

from qa.harness.capabilities import missing, needs, skip_reason
from qa.scenario.loader import load_scenarios

REPO = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, body: str) -> object:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\nprofiles: [fast]\n" + body)
    return load_scenarios([path])[0]


def test_a_plain_conversation_needs_nothing(tmp_path: Path) -> None:
    s = _scenario(tmp_path, "steps:\n  - send: {as: driver, mention: bot, body: hi, id: a}\n"
                            "  - expect_reply: {to: a}\n")
    assert needs(s) == []
    assert skip_reason("b", missing(s, [])) is None


def test_steps_and_settings_imply_what_they_need(tmp_path: Path) -> None:
    s = _scenario(tmp_path, """
rooms: {main: {encrypted: true}}
bot: {allowlist: [driver], sessionWriteLock: {scope: attempt}}
steps:
  - send: {as: driver, body: root, id: root}
  - send: {as: driver, mention: bot, thread: root, body: hi, id: a}
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
                                       "  - expect_no_reply: {to: a, control: {as: driver, body: ok}}\n")
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
    generic = {i for i, s in scenarios.items() if not missing(s, ["threads", "restart"])}
    assert {"canary", "matrix-mention-gating", "matrix-thread-follow-up", "matrix-top-level-reply-shape",
            "matrix-thread-isolation", "matrix-restart-resume"} <= generic
    for trace_only in ("matrix-reaction-notification", "matrix-session-lock-contention",
                       "matrix-approval-exec-deny", "matrix-allowlist-block"):
        assert trace_only not in generic
