"""The bot process seam without a homeserver: real child processes, their output, their exit."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

from qa.harness.bot_process import BotUnderTest, kill_stragglers
from qa.harness.botfile import BotFile
from qa.harness.launch import Launch

READY_S = 60.0  # the ready timeout where a test waits for an exit to be seen instead


def _bot(tmp_path: Path, code: str, ready: str = "^ready$", secrets: list[str] | None = None) -> BotUnderTest:
    bot = BotFile(name="t", command=[sys.executable, "-c", code], ready={"log": ready, "timeout": 10})
    env = {"MATRIX_QA_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"}
    return BotUnderTest(bot, Launch([sys.executable, "-c", code], env, tmp_path, None, None), tmp_path / "bot.log",
                        tmp_path / "trace.jsonl", tmp_path / "copy.jsonl", secrets if secrets is not None else [])


async def test_every_byte_of_a_long_line_reaches_bot_log_and_memory_stays_bounded(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "import time\nprint('A' * 3000000 + 'TAIL', flush=True)\nprint('ready', flush=True)\n"
                         "time.sleep(60)")
    start = await bot.start()
    await bot.wait_ready(10, start)
    await bot.stop(timeout_s=2)
    log = (tmp_path / "bot.log").read_text()
    assert log.count("A") == 3_000_001 and "TAIL" in log  # the A of TAIL too and log.endswith("ready\n")
    assert max(len(line) for line in bot.log.items) <= 2000


async def test_output_is_redacted_on_its_way_to_bot_log(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "import sys\nprint('token=syt_secret_token_1', flush=True)\n"
                         "print('err syt_secret_token_1', file=sys.stderr, flush=True)\nprint('ready', flush=True)\n"
                         "import time; time.sleep(60)", secrets=["syt_secret_token_1"])
    start = await bot.start()
    await bot.wait_ready(10, start)
    await bot.stop(timeout_s=2)
    log = (tmp_path / "bot.log").read_text()
    assert "syt_secret_token_1" not in log and log.count("[REDACTED]") == 2, "stdout and stderr, both redacted"


async def test_an_exit_is_seen_while_a_child_still_holds_stdout(tmp_path: Path) -> None:
    bot = _bot(tmp_path, "import subprocess, sys\nsubprocess.Popen(['sleep', '60'])\nsys.exit(3)", ready="never")
    start = await bot.start()
    began = asyncio.get_running_loop().time()
    try:
        await bot.wait_ready(READY_S, start)
    except Exception as exc:  # InfraError: not ready
        assert "exited with code 3" in str(exc) and "bot.log" in str(exc), exc
    else:
        raise AssertionError("a bot that exited was taken for ready")
    # At once, not after the ready timeout: a python start and exit (0.1-0.5 s measured in whole suites), against a
    # bound loose enough for a loaded machine and still half the wait the bug makes.
    assert asyncio.get_running_loop().time() - began < READY_S / 2, "at once, not after the ready timeout"
    assert bot.died.is_set()
    await bot.stop(timeout_s=2)


async def test_stragglers_are_found_by_their_state_dir(tmp_path: Path) -> None:
    marker = str(tmp_path / "state")
    env = {"MATRIX_QA_STATE_DIR": marker, "PATH": "/usr/bin:/bin"}
    # A daemon: its own session, parent gone; only its environment still says whose it is.
    proc = await asyncio.create_subprocess_exec("sleep", "60", env=env, start_new_session=True)
    # Until it has exec'd, the child's environment is still ours (no mark): wait for the exec, bounded.
    deadline = asyncio.get_running_loop().time() + 10
    while marker.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes():
        assert asyncio.get_running_loop().time() < deadline, "the child never exec'd"
        await asyncio.sleep(0.01)  # polling the child's environment for the exec, not a synchronization point
    killed = kill_stragglers(marker)
    assert proc.pid in killed
    assert await asyncio.wait_for(proc.wait(), 5) == -9
    assert kill_stragglers(marker) == [] and kill_stragglers("") == []


def test_lines_decoded_together_decode_as_each_alone() -> None:
    """bot.log's lines are decoded a chunk at a time; a line cut inside a character or holding bytes that are not
    UTF-8 comes out as it would alone (one replacement character per bad sequence, none across lines)."""
    import random

    from qa.harness.bot_process import decoded_lines

    rng = random.Random(3)
    alphabet = [b"a", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f\x98", b"\x80", b"\xff", "é€😀".encode()]
    for _ in range(500):
        raws = [b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 5))]
        assert decoded_lines(raws) == [raw.decode("utf-8", errors="replace") for raw in raws], raws
    assert decoded_lines([]) == [] and decoded_lines([b""]) == [""]
    assert decoded_lines([b"caf\xc3", b"\xa9"]) == ["caf\ufffd", "\ufffd"]


async def test_the_trace_copy_is_one_compact_redacted_line_per_record_and_every_record_reaches_the_stream(
        tmp_path: Path) -> None:
    """Records are copied a chunk at a time: each as compact JSON with its text unescaped, a secret redacted in
    it, a torn or foreign line left out; the waits get every record, in order."""
    import json

    from qa.harness.bot_process import TraceFollower, describe_record
    from qa.waiting import Stream

    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"t": 1, "type": "a", "s": "café syt_secret_token_1"}) + "\n" + "[1, 2]\n{torn\n"
                     + json.dumps({"t": 2, "type": "b", "n": [1, {"k": None}]}) + "\n{\"t\": 3", encoding="utf-8")
    stream: Stream[dict[str, object]] = Stream(describe_record)
    follower = TraceFollower(trace, tmp_path / "out" / "copy.jsonl", ["syt_secret_token_1"], stream)
    await follower.read()
    assert (tmp_path / "out" / "copy.jsonl").read_text(encoding="utf-8") == \
        '{"t":1,"type":"a","s":"café [REDACTED]"}\n{"t":2,"type":"b","n":[1,{"k":null}]}\n'
    assert [r["t"] for r in stream.items] == [1, 2]
    assert stream.items[0]["s"] == "café syt_secret_token_1", "the evidence itself is not redacted, only its copy"


async def test_a_stop_cancelled_mid_sweep_still_sweeps_what_the_bot_left(monkeypatch) -> None:
    # The sweep's two /proc passes (the marked stragglers, then the adopted orphans) run in a thread; a stop
    # cancelled while the first runs must not skip the second.
    import threading

    from qa.harness import bot_process

    first_running, release = threading.Event(), threading.Event()
    adopted_swept = threading.Event()

    def stragglers(owner: str) -> list[int]:
        first_running.set()
        release.wait(10)
        return []

    monkeypatch.setattr(bot_process, "kill_stragglers", stragglers)
    monkeypatch.setattr(bot_process.processes, "stop_adopted", lambda owner: adopted_swept.set())
    monkeypatch.setattr(bot_process.os, "killpg", lambda pid, sig: None)
    sweep = asyncio.ensure_future(bot_process._sweep(999_999, "owner"))
    assert await asyncio.to_thread(first_running.wait, 10)
    sweep.cancel()
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await sweep
    assert await asyncio.to_thread(adopted_swept.wait, 10)


async def test_the_last_look_at_a_stopping_bot_s_processes_is_taken_while_they_are_frozen(
        tmp_path: Path, monkeypatch) -> None:
    # Between the last /proc look and the signal, a descendant could fork, setsid and clear its environment and so
    # escape both the record and the group. The group is stopped (SIGSTOP) for the look, then signalled and
    # continued: a bot that ends cleanly on SIGTERM still does (it would sit stopped until SIGKILL otherwise).
    from qa.harness import bot_process

    states: list[str] = []
    record = bot_process.processes.record_descendants

    def looking(root: int, owner: str) -> list:
        # A stop signal is taken at the process's next trip through the kernel, which a loaded machine delays:
        # its state is read until it says stopped, or for at most 5 s (old code: never stopped).
        deadline = time.monotonic() + 5
        while True:
            state = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "T" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        states.append(state)
        return record(root, owner)

    monkeypatch.setattr(bot_process.processes, "record_descendants", looking)
    # Only the stop's look is under test. The running bot's periodic look (every RECORD_EVERY_S, 0.5 s) calls the
    # same function: a loaded machine that takes longer than that to start the bot ran it too, and it then waited
    # here for the freeze the stop brought (['T', 'T']), or gave up first (['S', 'T']). None runs in this test.
    monkeypatch.setattr(bot_process, "RECORD_EVERY_S", 3600.0)
    # (os.write: the signal may land while print('ready') is still inside stdout's buffer, which print refuses)
    bot = _bot(tmp_path, "import os, signal, sys, time\n"
                         "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'bye\\n'), sys.exit(0)))\n"
                         "print('ready', flush=True)\ntime.sleep(60)")
    start = await bot.start()
    await bot.wait_ready(10, start)
    code = await bot.stop(timeout_s=10)
    assert states == ["T"], states
    assert code == 0 and "bye" in (tmp_path / "bot.log").read_text()
