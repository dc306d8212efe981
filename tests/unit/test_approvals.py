from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest

from qa.agent.approvals import (
    ALLOW,
    DENY,
    METADATA_KEY,
    OUTCOME_BY_DECISION,
    ApprovalState,
    Outcome,
    build_request_messages,
    chunk_text,
    resolution_content,
)
from qa.agent.exec_tool import parse_command, run_command

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize("limit", [1, 7, 20, 280])
def test_chunks_respect_the_limit_and_keep_every_word(limit: int) -> None:
    text = "printf " + " ".join(f"word{i}" for i in range(120))
    chunks = chunk_text(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_short_text_is_one_chunk() -> None:
    assert chunk_text("hello", 280) == ["hello"]


def test_single_event_request_carries_all_metadata() -> None:
    [content] = build_request_messages("ap-1", "printf MQA-1", 280, NOW, 60)
    meta = content[METADATA_KEY]
    assert meta == {
        "version": 1, "type": "approval.request", "kind": "exec", "id": "ap-1", "state": "pending",
        "command": "printf MQA-1", "allowedDecisions": ["allow-once", "deny"], "expiresAt": "2026-11-24T06:01:00Z",
    }
    assert "printf MQA-1" in content["body"]


def test_chunked_request_has_metadata_on_the_first_chunk_only() -> None:
    command = "printf " + "x" * 600
    contents = build_request_messages("ap-2", command, 280, NOW, 60)
    assert len(contents) >= 3
    assert METADATA_KEY in contents[0]
    assert all(METADATA_KEY not in c for c in contents[1:])
    assert all(len(c["body"]) <= 280 for c in contents)
    assert "x" * 600 in "".join(c["body"] for c in contents).replace("\n", "")


def test_allowed_user_decides_others_are_ignored() -> None:
    state = ApprovalState("ap", "$req", frozenset({"@driver:x"}), "@bot:x")
    assert not state.offer("@bot:x", ALLOW, "$req")  # the bot's own option reaction
    assert not state.offer("@stranger:x", ALLOW, "$req")
    assert not state.offer("@driver:x", ALLOW, "$other-event")
    assert not state.offer("@driver:x", "👍", "$req")
    assert state.outcome == "pending"
    assert state.offer("@driver:x", DENY, "$req")
    assert state.outcome == "denied" and state.decided_by == "@driver:x"
    assert not state.offer("@driver:x", ALLOW, "$req"), "a decided request stays decided"
    assert [why for _, _, why in state.ignored] == ["sender-not-allowed", "not-a-decision"]
    assert "denied" in state.tool_result()


def test_expiry_and_results() -> None:
    state = ApprovalState("ap", "$req", None, "@bot:x")
    state.expire()
    assert state.outcome == "expired" and "not run" in state.tool_result()
    approved = ApprovalState("ap", "$req", None, "@bot:x")
    assert approved.offer("@anyone:x", ALLOW, "$req")
    assert approved.tool_result("MQA-1") == "MQA-1"
    assert resolution_content("ap", "approved", "$req", "@anyone:x")[METADATA_KEY]["state"] == "approved"


def test_command_allowlist_and_parsing() -> None:
    assert parse_command("printf 'a b'", ("printf",)) == ["printf", "a b"]
    assert "not on the allowlist" in str(parse_command("rm -rf /", ("printf",)))
    assert "cannot parse" in str(parse_command("printf 'open", ("printf",)))


async def test_run_command_without_a_shell() -> None:
    result = await run_command("printf '%s' 'MQA-1; echo pwned'", ("printf",))
    assert result.ran and result.exit_code == 0
    assert result.output == "MQA-1; echo pwned"  # no shell: the semicolon is just text
    refused = await run_command("sh -c 'echo hi'", ("printf",))
    assert not refused.ran and "allowlist" in refused.output


async def test_a_cancelled_command_is_killed_not_left_running(tmp_path) -> None:
    # A stop mid-approval cancels the turn: the command it started must end with it (the bot's process-group kill
    # and the harness's sweep were the only ones to end it before).
    import os

    started = tmp_path / "pid"
    task = asyncio.create_task(run_command(f"sh -c 'echo $$ > {started}; exec sleep 60'", ("sh",)))
    deadline = asyncio.get_running_loop().time() + 10
    while not started.exists() or not started.read_text().strip():
        assert asyncio.get_running_loop().time() < deadline, "the command never started"
        await asyncio.sleep(0.01)  # polling a file the child writes: bounded above
    pid = int(started.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):  # reaped by the kill, bounded: 5 s
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().split(") ")[1].startswith("Z"):
                break
        await asyncio.sleep(0.01)
    else:
        os.kill(pid, 9)
        raise AssertionError("the cancelled command was left running")


@pytest.mark.parametrize(
    ("text", "limit", "chunks"),
    [
        ("aaa bbb ccc", 7, ["aaa bbb", "ccc"]),  # a space right at the limit is a boundary
        ("aaa bbb ccc", 6, ["aaa", "bbb", "ccc"]),
        ("ab\ncd ef", 7, ["ab", "cd ef"]),  # a line break wins over a later space
        ("ab cd\nef", 6, ["ab cd", "ef"]),  # a line break right at the limit is a boundary too
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # no boundary: a hard cut, nothing dropped
        ("abc  \n\n def", 4, ["abc ", "def"]),  # the run of separators after a cut is dropped
        ("abcd efgh", 4, ["abcd", "efgh"]),
        ("\nabc def", 5, ["\nabc", "def"]),  # a break at the very start is no place to cut
        (" abcdef", 4, [" abc", "def"]),  # nor is a space there
        ("a\nbcdef", 4, ["a", "bcde", "f"]),  # a break one character in is a boundary
        ("a bcdef", 4, ["a", "bcde", "f"]),
        ("ab Xcd", 3, ["ab", "Xcd"]),  # only line breaks and spaces are dropped at a cut
        ("ab c", 4, ["ab c"]),  # exactly the limit: one chunk, not cut at its space
        ("", 5, [""]),
        ("abc", 3, ["abc"]),
    ],
)
def test_chunk_boundaries(text: str, limit: int, chunks: list[str]) -> None:
    assert chunk_text(text, limit) == chunks


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_instead_of_looping(limit: int) -> None:
    with pytest.raises(ValueError, match=r"^chunk limit must be positive$"):
        chunk_text("some text", limit)


def test_request_text_names_the_id_the_command_and_both_options() -> None:
    [content] = build_request_messages("ap-1", "printf MQA-1", 280, NOW, 60)
    assert content["body"] == (
        "Approval needed (ap-1): the assistant wants to run this command:\nprintf MQA-1\n"
        "React ✅ to allow it once or ❌ to deny it."
    )
    assert (content["msgtype"], content["m.mentions"]) == ("m.notice", {})
    assert METADATA_KEY == "org.matrix_qa.approval"
    assert (ALLOW, DENY) == ("✅", "❌")


def test_expiry_is_written_in_utc_whatever_the_clock_zone() -> None:
    local = datetime(2026, 11, 24, 8, 0, 30, 999_000, tzinfo=timezone(timedelta(hours=2)))
    [content] = build_request_messages("ap-1", "printf x", 280, local, 90.5)
    assert content[METADATA_KEY]["expiresAt"] == "2026-11-24T06:02:01Z"


def test_every_chunk_is_a_notice_that_mentions_nobody() -> None:
    contents = build_request_messages("ap-2", "printf " + "x" * 600, 280, NOW, 60)
    assert all((c["msgtype"], c["m.mentions"]) == ("m.notice", {}) for c in contents)
    assert contents[0]["body"].startswith("Approval needed (ap-2)")


@pytest.mark.parametrize(
    ("outcome", "decided_by", "body"),
    [
        ("approved", "@d:x", "Approval ap-7 approved by @d:x."),
        ("denied", "@d:x", "Approval ap-7 denied by @d:x."),
        ("expired", None, "Approval ap-7 expired without a decision."),
        ("pending", None, "Approval ap-7 pending."),
    ],
)
def test_resolution_content(outcome: Any, decided_by: str | None, body: str) -> None:
    content = resolution_content("ap-7", outcome, "$req", decided_by)
    expected_meta: dict[str, Any] = {
        "version": 1, "type": "approval.resolution", "kind": "exec", "id": "ap-7", "state": outcome,
        "requestEventId": "$req",
    }
    if decided_by:
        expected_meta["decidedBy"] = decided_by
    assert content == {"msgtype": "m.notice", "body": body, "m.mentions": {}, METADATA_KEY: expected_meta}


def test_allow_approves_and_the_result_is_the_output() -> None:
    state = ApprovalState("ap", "$req", frozenset({"@driver:x"}), "@bot:x")
    assert state.offer("@driver:x", ALLOW, "$req")
    assert (state.outcome, state.decided_by, state.ignored) == ("approved", "@driver:x", [])
    assert state.tool_result("out") == "out"
    assert state.tool_result() == ""
    state.expire()
    assert state.outcome == "approved", "expiry does not undo a decision"


def test_ignored_reactions_are_recorded_with_sender_and_key() -> None:
    state = ApprovalState("ap", "$req", frozenset({"@driver:x"}), "@bot:x")
    state.offer("@stranger:x", DENY, "$req")
    state.offer("@driver:x", "👍", "$req")
    state.offer("@bot:x", ALLOW, "$req")
    state.offer("@driver:x", "👍", "$elsewhere")
    assert state.ignored == [("@stranger:x", DENY, "sender-not-allowed"), ("@driver:x", "👍", "not-a-decision")]
    assert (state.outcome, state.decided_by) == ("pending", None)


def test_anyone_but_the_bot_may_decide_without_an_allowlist() -> None:
    state = ApprovalState("ap", "$req", None, "@bot:x")
    assert not state.offer("@bot:x", DENY, "$req")
    assert state.offer("@anyone:x", DENY, "$req")
    assert (state.outcome, state.decided_by) == ("denied", "@anyone:x")


def test_tool_results_tell_the_model_what_happened() -> None:
    denied = ApprovalState("ap-3", "$req", None, "@bot:x")
    denied.offer("@d:x", DENY, "$req")
    assert denied.tool_result("ignored output") == (
        "The user denied running this command (approval ap-3); it was not run."
    )
    expired = ApprovalState("ap-4", "$req", None, "@bot:x")
    expired.expire()
    assert expired.outcome == "expired"
    assert expired.tool_result("ignored output") == (
        "Nobody approved this command in time (approval ap-4); it was not run."
    )
    assert ApprovalState("ap-5", "$req", None, "@bot:x").outcome == "pending"


def test_the_outcome_type_names_every_state_a_request_can_reach() -> None:
    # Outcome is what the resolution's `state` field is typed as; it must cover what ApprovalState produces.
    assert get_args(Outcome) == ("pending", "approved", "denied", "expired")
    assert {ApprovalState("a", "$r", None, "@b:x").outcome, *OUTCOME_BY_DECISION.values(), "expired"} == set(
        get_args(Outcome)
    )
