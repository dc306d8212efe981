"""The embedded agent's approval conversation without a homeserver: a decision that comes after the request ended
is refused on the record, an approved command runs in the exec directory, and the test-only mutations do the
bugs their scenarios must catch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from qa.agent.approval_flow import ApprovalFlow, ApprovalSettings
from qa.agent.model import ToolCall
from qa.kernel.trace import Trace, read_trace

BOT = "@bot:hs"


class Room:
    def __init__(self) -> None:
        self.posted: list[tuple[dict[str, Any], str | None]] = []
        self.offered = asyncio.Event()  # the options are offered once the request is pending

    async def post(self, room_id: str, content: dict[str, Any], thread_root: str | None) -> str:
        self.posted.append((content, thread_root))
        return f"$e{len(self.posted)}"

    async def react(self, room_id: str, target: str, key: str) -> str:
        self.offered.set()
        return "$r"


def flow(tmp_path: Path, **settings: Any) -> tuple[ApprovalFlow, Room, Trace]:
    room = Room()
    trace = Trace(tmp_path / "trace.jsonl")
    exec_dir = tmp_path / "exec"
    exec_dir.mkdir()
    return ApprovalFlow(room.post, room.react, trace, BOT,
                        ApprovalSettings(exec_dir=str(exec_dir), **settings)), room, trace


def touch(name: str) -> ToolCall:
    return ToolCall("c1", "exec", json.dumps({"command": f"touch {name}"}))


async def test_an_approved_command_runs_in_the_exec_directory(tmp_path: Path) -> None:
    approvals, room, trace = flow(tmp_path, timeout_s=10)
    task = asyncio.create_task(approvals.run_exec("s", "a1", "!r", "$root", None, touch("made")))
    await asyncio.wait_for(room.offered.wait(), 5)
    assert approvals.on_reaction("@driver:hs", "✅", "$e1", "$x")
    assert await task == "(no output; exit code 0)"
    assert (tmp_path / "exec" / "made").exists()
    assert {t for _, t in room.posted} == {"$root"}  # request and outcome in the thread asked in
    trace.close()


async def test_a_reaction_after_the_expiry_is_refused_on_the_record(tmp_path: Path) -> None:
    approvals, _, trace = flow(tmp_path, timeout_s=0.01)
    result = await approvals.run_exec("s", "a1", "!r", None, None, touch("late"))
    assert "Nobody approved this command in time" in result
    assert approvals.on_reaction("@driver:hs", "✅", "$e1", "$late")
    assert not approvals.on_reaction(BOT, "✅", "$e1", "$own")  # the bot's own options are not decisions
    assert not approvals.on_reaction("@driver:hs", "✅", "$unrelated", "$y")
    trace.close()
    late = [r for r in read_trace(tmp_path / "trace.jsonl") if r["type"] == "approval.reaction"]
    assert [(r["eventId"], r["decision"], r["reason"]) for r in late] == [("$late", "ignored", "already-expired")]
    assert not (tmp_path / "exec" / "late").exists()


async def test_the_mutations_do_their_bugs(tmp_path: Path) -> None:
    approvals, room, trace = flow(tmp_path, timeout_s=0.01, run_when_refused=True, top_level_only=True,
                                  run_late_approvals=True)
    await approvals.run_exec("s", "a1", "!r", "$root", None, touch("refused"))
    assert (tmp_path / "exec" / "refused").exists()
    assert {t for _, t in room.posted} == {None}
    (tmp_path / "exec" / "refused").unlink()
    approvals.on_reaction("@driver:hs", "✅", "$e1", "$late")
    await asyncio.gather(*approvals._late_runs)
    assert (tmp_path / "exec" / "refused").exists()
    trace.close()
    assert not [r for r in read_trace(tmp_path / "trace.jsonl") if r["type"] == "exec.run"]
