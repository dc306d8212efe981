from __future__ import annotations

from datetime import UTC, datetime

import pytest

from qa.agent.approvals import (
    ALLOW,
    DENY,
    METADATA_KEY,
    ApprovalState,
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
