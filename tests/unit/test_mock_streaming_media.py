"""The mock provider's paced streaming (rule `stream:`) and its journal of image parts (counted, never kept)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from qa.provider.mock import MockProvider
from qa.provider.rules import RuleFileError, parse_rules
from tests.unit.test_mock_provider import sdk

RULES = """
rules:
  - name: paced
    match: {latest_user: "pace me"}
    reply: {text: "abcdefghij"}
    stream: {pieces: 5, delay_ms: 60}
"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


async def test_a_paced_rule_streams_its_pieces_with_the_delay_between_them(tmp_path: Path) -> None:
    async with MockProvider(parse_rules(RULES)) as mock, sdk(mock) as client:
        stream = await client.chat.completions.create(
            model=mock.model, messages=[{"role": "user", "content": "pace me"}], stream=True)
        arrivals: list[tuple[float, str]] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    assert [p for _, p in arrivals] == ["ab", "cd", "ef", "gh", "ij"]
    # Each piece waits its delay: the whole stream takes at least 5 x 60 ms (a lower bound only).
    assert arrivals[-1][0] - arrivals[0][0] >= 4 * 0.06 * 0.9
    [entry] = [e for e in mock.journal if e.is_chat]
    assert (entry.pieces, entry.chunk_delay_ms) == (5, 60)


def test_stream_spec_is_checked_when_the_rules_load() -> None:
    with pytest.raises(RuleFileError, match=r"stream\.pieces"):
        parse_rules(RULES.replace("pieces: 5", "pieces: 0"))
    with pytest.raises(RuleFileError, match="unknown field"):
        parse_rules(RULES.replace("delay_ms: 60", "delay: 60"))


async def test_image_parts_are_counted_and_the_journal_file_keeps_no_bytes() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content = [{"type": "text", "text": "reply with only this exact marker: MQA-0000abcd"},
               {"type": "image_url", "image_url": {"url": url}}]
    async with MockProvider() as mock, sdk(mock) as client:
        reply = await client.chat.completions.create(model=mock.model, messages=[{"role": "user", "content": content}])
    assert reply.choices[0].message.content == "MQA-0000abcd"  # the text part is what rules read
    [entry] = [e for e in mock.journal if e.is_chat]
    assert entry.images == 1
    saved = json.dumps(entry.to_json())
    assert base64.b64encode(PNG).decode() not in saved
    assert f"<{len(url) - len('data:image/png;base64,')} chars>" in saved
    assert entry.messages[0]["content"][1]["image_url"]["url"] == url  # in memory the request is whole
