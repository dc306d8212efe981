"""A directory's writes as a wake-up (qa.harness.file_watch), and the bot's trace follower waking on them instead of
polling the file every 5 ms (qa.harness.bot_process)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from qa.harness import bot_process, file_watch
from qa.harness.bot_process import BotUnderTest, TraceFollower
from qa.harness.botfile import BotFile
from qa.harness.launch import Launch

LONG_S = 30.0  # a bound no wake-up here comes near, so a wake that came is the write's (or the poke's), not the bound's


async def test_a_write_wakes_the_waiter_and_nothing_written_waits_out_the_bound(tmp_path: Path) -> None:
    watch = file_watch.open_watch(tmp_path)
    assert watch is not None, "Linux: inotify is there"
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        await watch.changed(0.05)
        assert loop.time() - began >= 0.04, "nothing written: the bound"
        waiter = asyncio.ensure_future(watch.changed(LONG_S))
        await asyncio.sleep(0)
        (tmp_path / "trace.jsonl").write_text("{}\n")
        await asyncio.wait_for(waiter, LONG_S / 2)
        (tmp_path / "trace.jsonl").write_text("{}\n{}\n")  # before the wait: kept for it, never lost
        await asyncio.wait_for(watch.changed(LONG_S), LONG_S / 2)
        watch.poke()
        await asyncio.wait_for(watch.changed(LONG_S), LONG_S / 2)
    finally:
        watch.close()
        watch.close()  # idempotent


async def test_no_watch_where_there_is_nothing_to_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert file_watch.open_watch(tmp_path / "missing") is None
    monkeypatch.setattr(file_watch, "_lib", lambda: None)
    assert file_watch.open_watch(tmp_path) is None, "no inotify: the caller polls"


def _bot(tmp_path: Path, code: str) -> BotUnderTest:
    bot = BotFile(name="t", command=[sys.executable, "-c", code], ready={"trace": True, "timeout": 10})
    env = {"MATRIX_QA_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    return BotUnderTest(bot, Launch([sys.executable, "-c", code], env, tmp_path, None, None), tmp_path / "bot.log",
                        tmp_path / "trace.jsonl", tmp_path / "copy.jsonl", [])


async def test_the_trace_follower_wakes_on_writes_not_every_few_milliseconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[float] = []
    real = TraceFollower.read

    async def counted(self: TraceFollower) -> None:
        reads.append(asyncio.get_running_loop().time())
        await real(self)

    monkeypatch.setattr(TraceFollower, "read", counted)
    # The follower's bound far beyond the waits below: only a wake on the bot's writes can see its records in time
    # (a follower that never wakes sees nothing for LONG_S; one that sleeps a fixed tick reads ~10 times a second).
    monkeypatch.setattr(bot_process, "TRACE_WATCH_S", LONG_S)
    # A bot that writes `ready`, sits quiet for a second, then writes one more record.
    code = ("import json, os, time\n"
            "path = os.environ['TRACE']\n"
            "open(path, 'a').write(json.dumps({'t': 1, 'type': 'ready'}) + '\\n')\n"
            "time.sleep(1.0)\n"
            "open(path, 'a').write(json.dumps({'t': 2, 'type': 'late'}) + '\\n')\n"
            "time.sleep(60)\n")
    bot = _bot(tmp_path, code)
    bot.launch.env["TRACE"] = str(tmp_path / "trace.jsonl")
    start = await bot.start()
    try:
        await bot.wait_ready(LONG_S / 3, start)
        quiet_from = len(reads)
        await bot.trace.wait_for(lambda r: r.get("type") == "late", LONG_S / 3, "the late record", start, pure=True)
        quiet = len(reads) - quiet_from
        # Polling every 5 ms read ~200 times in the second of quiet (91 measured at load 7, where polls come late),
        # a fixed 0.1 s tick ~10; a watch with its bound out of reach reads on the writes alone (the trace's and
        # the follower's own copy beside it): 2 measured.
        assert quiet <= 5, f"{quiet} reads of an unchanged trace in ~1 s"
    finally:
        await bot.stop(timeout_s=2)
    assert bot.trace.closed_reason is not None, "the follower ended with the process and closed the stream"


async def test_without_inotify_the_follower_polls_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_watch, "open_watch", lambda directory: None)
    code = ("import json, os, time\n"
            "open(os.environ['TRACE'], 'a').write(json.dumps({'t': 1, 'type': 'ready'}) + '\\n')\n"
            "time.sleep(60)\n")
    bot = _bot(tmp_path, code)
    bot.launch.env["TRACE"] = str(tmp_path / "trace.jsonl")
    start = await bot.start()
    try:
        await bot.wait_ready(10, start)
    finally:
        await bot.stop(timeout_s=2)
    assert bot_process.TRACE_POLL_S < bot_process.TRACE_WATCH_S
