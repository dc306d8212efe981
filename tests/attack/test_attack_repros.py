"""Deterministic repros of defects found by attacking issues 11 and 12 (see the attack report).

Each test states what SHOULD happen; each failed on the code it was written against (they were strict xfails
until the fixes landed), so each now guards its defect against coming back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from qa.harness.botfile import BotFile, ReadySpec, builtin_bot_file
from qa.harness.launch import Launch


def test_a_huge_trace_timestamp_does_not_crash_the_lock_evidence() -> None:
    """A trace line with a 400-digit integer `t` made `matrix-qa run` die in _write with OverflowError: no
    summary, no report, exit 1 (repro: tests/attack/t-huge-t.yaml)."""
    from qa.report.lock_evidence import analyze_lock_evidence

    records = [{"type": "lock.acquire", "t": 10**400, "session": "s", "attempt": "a"}]
    analyze_lock_evidence(records, [])  # must not raise


def test_an_unstarted_mock_provider_still_gives_a_summary() -> None:
    """SIGTERM while the mock provider is starting: _write's _provider_info raised RuntimeError ("mock
    provider not started") through getattr(..., "base_url", ""), so no summary was written and the exit was 1."""
    from qa.provider.mock import MockProvider
    from qa.run.provider import provider_info

    provider_info(MockProvider(None), None)  # must not raise


def test_a_regex_with_a_huge_repeat_is_a_bot_file_error() -> None:
    """`ready: {log: "a{99999999999}"}` raised OverflowError (a traceback from `run` and `validate --bot`)."""
    with pytest.raises(ValidationError):
        ReadySpec(log="a{99999999999}")


def test_a_trace_truncated_on_restart_is_read_again(tmp_path: Path) -> None:
    """A bot that opens its trace with mode "w" on each start and writes a `ready` line of the same length:
    size == old offset, so the new record was never read and the restart timed out (tests/attack/t-truncate.yaml)."""
    from qa.harness.bot_process import BotUnderTest

    trace = tmp_path / "trace.jsonl"
    bot = BotUnderTest(builtin_bot_file(), Launch([], {}, tmp_path, None, None), tmp_path / "bot.log", trace,
                       tmp_path / "copy.jsonl", [])

    async def scenario() -> list[dict]:
        trace.write_text('{"type":"ready","t":1000}\n')
        await bot.trace_reader.read()
        trace.write_text('{"type":"ready","t":2000}\n')  # the restarted bot truncated and rewrote it
        await bot.trace_reader.read()
        return bot.trace.items

    items = asyncio.run(scenario())
    assert [r["t"] for r in items] == [1000, 2000]


def test_a_bot_that_writes_only_the_ready_record_is_not_judged_by_trace_replies() -> None:
    """docs/trace-format.md: "Every record is optional". Writing only `ready` (readiness {trace: true}) makes
    has("trace") true, so expect_reply waits for `reply.sent` records the bot never writes and fails a correct
    reply after 30 s (tests/attack/evil-trace-ready-only.yaml)."""
    bot = BotFile(name="b", command=["x"], ready=ReadySpec(trace=True))
    assert not bot.has("trace")
