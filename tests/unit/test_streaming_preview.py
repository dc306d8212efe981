"""Streaming previews (qa.agent.streaming): pacing, contents, and a Preview driven against a fake send."""

from __future__ import annotations

from typing import Any

import pytest

from qa.agent import streaming
from qa.agent.streaming import (
    DRAFT_SUFFIX,
    QUIET_PLACEHOLDER,
    EditPacer,
    Preview,
    compose,
    draft_content,
    edit_content,
    leaky_mentions,
    tool_failed,
    tool_line,
)
from qa.kernel.trace import Trace


def test_pacer_shows_the_first_text_at_once_then_at_most_once_per_interval() -> None:
    pacer = EditPacer(250)
    assert pacer.due(1000)
    pacer.mark(1000)
    assert not pacer.due(1249.9)
    assert pacer.due(1250)
    pacer.mark(1300)
    assert not pacer.due(1500) and pacer.due(1550)


def test_compose_keeps_tool_lines_in_previews_and_only_the_answer_in_the_final_text() -> None:
    progress = [tool_line("exec", {"command": "printf x"}, "done")]
    assert compose("The answer", progress, final=False) == f"🔧 exec: printf x (done)\nThe answer{DRAFT_SUFFIX}"
    assert compose("The answer", progress, final=True) == "The answer"
    assert compose("", [], final=False) == QUIET_PLACEHOLDER


@pytest.mark.parametrize(("result", "failed"), [
    ("not run: program 'cat' is not on the allowlist", True),
    ("The user denied running this command (approval a); it was not run.", True),
    ("could not post the approval request", True),
    ("unknown tool 'x'", True),
    ("MQA-1234abcd", False),
    ("", False),
])
def test_tool_failed_reads_the_results_the_bot_gives(result: str, failed: bool) -> None:
    assert tool_failed(result) is failed


def test_contents_never_ping_unless_the_mutation_asks() -> None:
    text = "@room look, @alice:example.org"
    assert draft_content(text, "m.text", None)["m.mentions"] == {}
    edit = edit_content("$draft", text)
    assert edit["m.mentions"] == {} and edit["m.new_content"]["m.mentions"] == {}
    assert edit["body"] == f"* {text}" and edit["m.new_content"]["body"] == text
    assert edit["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$draft"}
    assert leaky_mentions(text) == {"room": True, "user_ids": ["@alice:example.org"]}
    assert edit_content("$d", text, pings=True)["m.new_content"]["m.mentions"]["room"] is True


class FakeRoom:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, content: dict[str, Any]) -> str:
        self.sent.append(content)
        return f"$e{len(self.sent)}"


def preview(mode: str, room: FakeRoom, **kwargs: Any) -> Preview:
    return Preview(mode, room.send, Trace(None), session="s", attempt="a", relates_to=None,  # type: ignore[arg-type]
                   interval_ms=kwargs.pop("interval_ms", 10_000), tool_progress=kwargs.pop("tool_progress", True),
                   **kwargs)


async def test_partial_drafts_on_first_text_paces_edits_and_finalizes_with_the_whole_answer() -> None:
    room = FakeRoom()
    p = preview("partial", room)
    await p.start()
    assert room.sent == []
    for text in ("He", "Hello", "Hello wor"):
        await p.on_text(text)
    # The interval is long: one draft, no edit in between.
    assert [c.get("m.relates_to") for c in room.sent] == [None]
    assert room.sent[0]["body"] == f"He{DRAFT_SUFFIX}" and room.sent[0]["msgtype"] == "m.text"
    assert await p.finish("Hello world") == "$e1"
    final = room.sent[-1]
    assert final["m.new_content"] == {"msgtype": "m.text", "body": "Hello world", "m.mentions": {}}
    assert final["m.relates_to"]["event_id"] == "$e1"


async def test_partial_edits_as_text_arrives_when_the_interval_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(streaming, "mono_ms", lambda: now[0])
    room = FakeRoom()
    p = preview("partial", room, interval_ms=100)
    for t, text in ((0, "a"), (50, "ab"), (120, "abc"), (150, "abcd"), (230, "abcde")):
        now[0] = t
        await p.on_text(text)
    bodies = [c.get("m.new_content", c)["body"] for c in room.sent]
    assert bodies == [f"a{DRAFT_SUFFIX}", f"abc{DRAFT_SUFFIX}", f"abcde{DRAFT_SUFFIX}"]


async def test_quiet_is_a_notice_then_exactly_one_edit() -> None:
    room = FakeRoom()
    p = preview("quiet", room, interval_ms=1)
    await p.start()
    for text in ("a", "ab", "abc"):
        await p.on_text(text)
    await p.finish("abc!")
    assert room.sent[0] == {"msgtype": "m.notice", "body": QUIET_PLACEHOLDER, "m.mentions": {}}
    assert len(room.sent) == 2 and room.sent[1]["m.new_content"]["body"] == "abc!"


async def test_tool_progress_shows_running_then_failed_and_still_finalizes() -> None:
    room = FakeRoom()
    p = preview("partial", room)
    await p.tool_started("exec", {"command": "cat x"})
    failed = await p.tool_finished("exec", {"command": "cat x"}, "not run: program 'cat' is not on the allowlist")
    p.next_round()
    await p.finish("It could not run.")
    bodies = [c.get("m.new_content", c)["body"] for c in room.sent]
    assert failed and bodies == [f"🔧 exec: cat x (running){DRAFT_SUFFIX}", f"🔧 exec: cat x (failed){DRAFT_SUFFIX}",
                                 "It could not run."]


async def test_tool_progress_off_shows_no_tool() -> None:
    room = FakeRoom()
    p = preview("partial", room, tool_progress=False)
    await p.tool_started("exec", {"command": "printf x"})
    await p.tool_finished("exec", {"command": "printf x"}, "x")
    assert room.sent == []
    await p.finish("x")
    assert [c["body"] for c in room.sent] == ["x"]  # nothing previewed: the answer is the one message


async def test_the_final_edit_mutation_drops_the_tail() -> None:
    room = FakeRoom()
    p = preview("partial", room, truncate_final=True)
    await p.on_text("abc")
    await p.finish("abcdef")
    assert room.sent[-1]["m.new_content"]["body"] == "abcd"


async def test_lock_hooks_run_once_around_the_stream() -> None:
    calls: list[str] = []

    async def before() -> None:
        calls.append("before")

    async def after() -> None:
        calls.append("after")

    room = FakeRoom()
    p = preview("partial", room, before_draft=before, after_stream=after)
    await p.on_text("a")
    await p.on_text("ab")
    await p.end_stream()
    await p.end_stream()
    await p.finish("abc")
    assert calls == ["before", "after"]


async def test_every_send_is_traced_as_preview_io(tmp_path) -> None:
    from qa.kernel.trace import read_trace

    trace = Trace(tmp_path / "t.jsonl")
    room = FakeRoom()
    p = Preview("partial", room.send, trace, session="s", attempt="a", relates_to=None, interval_ms=1,
                tool_progress=True)
    await p.on_text("a")
    await p.finish("ab")
    trace.close()
    kinds = [(r["type"], r["kind"]) for r in read_trace(tmp_path / "t.jsonl") if r["type"].startswith("preview")]
    assert kinds == [("preview.edit.start", "draft"), ("preview.edit.end", "draft"),
                     ("preview.edit.start", "final"), ("preview.edit.end", "final")]


async def test_quiet_stays_quiet_through_tool_progress() -> None:
    room = FakeRoom()
    p = preview("quiet", room, interval_ms=1)
    await p.start()
    await p.tool_started("exec", {"command": "printf x"})
    await p.tool_finished("exec", {"command": "printf x"}, "x")
    await p.finish("x")
    assert [c.get("m.new_content", c)["body"] for c in room.sent] == [QUIET_PLACEHOLDER, "x"]


async def test_a_failed_turn_turns_its_draft_into_a_no_answer_note_once() -> None:
    room = FakeRoom()
    p = preview("quiet", room)
    await p.start()
    await p.give_up()
    await p.give_up()
    assert [c.get("m.new_content", c)["body"] for c in room.sent] == [QUIET_PLACEHOLDER, streaming.NO_ANSWER]
    nothing = FakeRoom()
    await preview("partial", nothing).give_up()
    assert nothing.sent == []
