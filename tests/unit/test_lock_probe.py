"""The contention probe across the seam: the harness's end (qa.harness.probe: the bot file's `lock_probe` started
per scenario, asked per model request, its answers checked) and the agent's end (qa.agent.lock_probe: the
agent's own lock code, a pure observer). Real processes, no homeserver."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import qa.agent.lock as lock_module
import qa.agent.lock_probe as probe_module
from qa.agent.lock import SessionWriteLock, release_all_held
from qa.agent.lock_probe import probe_once, serve
from qa.agent.transcript import transcript_file_name
from qa.harness.bot_process import BotUnderTest
from qa.harness.botfile import BotFile, builtin_bot_file
from qa.harness.launch import Launch
from qa.harness.probe import (
    NOT_CHECKED,
    ProbeFailed,
    ProbeProcess,
    Prober,
    follow_and_probe,
    probe_result,
    start_prober,
    stop_prober,
)
from qa.kernel.lock_settings import LockSettings

REPO = Path(__file__).resolve().parents[2]
RESULTS_WAIT_S = 30.0  # for a probe process to answer what it was asked; ends as soon as it has


@pytest.fixture(autouse=True)
def _no_leaked_holds() -> Any:
    yield
    release_all_held()


# --- the answers, judged ----------------------------------------------------------------------------------------


def test_an_answer_becomes_the_probe_record_of_the_session_asked() -> None:
    assert probe_result({"session": "other", "t": 5, "acquiredElapsedMs": 0.25}, "s") == \
        {"session": "s", "t": 5.0, "acquiredElapsedMs": 0.25}
    assert probe_result({"t": 5.5, "timeoutElapsedMs": 25, "error": "session file locked"}, "s") == \
        {"session": "s", "t": 5.5, "timeoutElapsedMs": 25.0, "error": "session file locked"}
    assert probe_result({"t": 1, "timeoutElapsedMs": 25}, "s") == \
        {"session": "s", "t": 1.0, "timeoutElapsedMs": 25.0, "error": "timed out"}
    assert probe_result({"session": "s", "skipped": "no sessions"}, "s") is None
    # Optional on a timeout: when the hold that kept the probe out was taken (qa.report.lock_evidence judges it).
    assert probe_result({"t": 5.5, "timeoutElapsedMs": 25, "error": "locked", "heldSinceT": 3}, "s") == \
        {"session": "s", "t": 5.5, "timeoutElapsedMs": 25.0, "error": "locked", "heldSinceT": 3.0}
    assert probe_result({"t": 5.5, "timeoutElapsedMs": 25, "error": "locked", "heldSinceT": None}, "s") == \
        {"session": "s", "t": 5.5, "timeoutElapsedMs": 25.0, "error": "locked"}  # null is left out, not a failure


@pytest.mark.parametrize("answer", [
    [], "ok", None, {}, {"t": 1}, {"acquiredElapsedMs": 1}, {"t": "1", "acquiredElapsedMs": 1},
    {"t": 1, "acquiredElapsedMs": True}, {"t": 1, "acquiredElapsedMs": 1, "timeoutElapsedMs": 2},
    {"t": float("nan"), "acquiredElapsedMs": 1}, {"t": 1, "timeoutElapsedMs": float("inf")}, {"t": None},
    {"t": 1, "timeoutElapsedMs": 25, "heldSinceT": "0"}, {"t": 1, "timeoutElapsedMs": 25, "heldSinceT": True},
])
def test_anything_else_is_a_probe_failure_that_shows_it(answer: Any) -> None:
    with pytest.raises(ProbeFailed, match="answered"):
        probe_result(answer, "s")


def test_a_long_answer_is_cut_in_the_message() -> None:
    with pytest.raises(ProbeFailed) as err:
        probe_result({"x": "y" * 1000}, "s")
    assert len(str(err.value)) < 400 and "…" in str(err.value)


# --- the agent's probe ----------------------------------------------------------------------------------------


def test_the_agents_probe_acquires_a_free_lock_and_leaves_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock moves only by the waits the lock asks for: "at once" is exactly no wait, where "under 25 ms" of
    # wall time is something a loaded machine can break with no wait at all.
    now = [1000.0]
    monkeypatch.setattr(lock_module, "mono_ms", lambda: now[0])
    monkeypatch.setattr(probe_module, "mono_ms", lambda: now[0])
    monkeypatch.setattr(lock_module, "time", SimpleNamespace(sleep=lambda s: now.__setitem__(0, now[0] + s * 1000)))
    result = probe_once(tmp_path, "!r:x/main", 25)
    assert set(result) == {"session", "t", "acquiredElapsedMs"} and result["session"] == "!r:x/main"
    assert result["acquiredElapsedMs"] == 0
    assert list(tmp_path.iterdir()) == []


def test_the_agents_probe_times_out_on_a_held_lock_and_never_takes_it_over(tmp_path: Path) -> None:
    transcript = tmp_path / transcript_file_name("!r:x/main")
    # A holder long past any staleMs/maxHoldMs a waiter would honour: the probe still must not take it.
    hold_started = lock_module.mono_ms()
    hold = SessionWriteLock(transcript, LockSettings(max_hold_ms=1, stale_ms=1)).acquire_sync("bot", "turn")
    result = probe_once(tmp_path, "!r:x/main", 25)
    assert result["timeoutElapsedMs"] >= 25
    assert result["error"].startswith("session file locked (timeout 25ms): pid=")
    # When the holder took the lock, from its lock file: before the probe's try, on the shared clock.
    assert hold_started <= result["heldSinceT"] <= result["t"]
    assert hold.still_owned()
    assert not transcript.with_name(transcript.name + ".takeovers.jsonl").exists()


def test_the_agents_probe_skips_a_missing_sessions_dir(tmp_path: Path) -> None:
    assert probe_once(tmp_path / "none", "s", 25) == {"session": "s", "skipped": f"no {tmp_path / 'none'}"}


def test_the_agents_probe_speaks_the_line_protocol(tmp_path: Path) -> None:
    out = io.StringIO()
    requests = io.BytesIO(b'{"session": "a", "timeoutMs": 5}\n{"session": "b"}\n')
    assert serve(tmp_path, requests, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"ready": True}
    assert [line["session"] for line in lines[1:]] == ["a", "b"]
    with pytest.raises(ValueError, match="timeoutMs"):
        serve(tmp_path, io.BytesIO(b'{"session": "a", "timeoutMs": -1}\n'), io.StringIO())


def test_the_agents_probe_command_line(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (tmp_path / "sessions").mkdir()
    done = subprocess.run([sys.executable, "-m", "qa.agent.lock_probe", str(tmp_path)], input='{"session": "s"}\n',
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    ready, answer = (json.loads(line) for line in done.stdout.splitlines())
    assert ready == {"ready": True} and "acquiredElapsedMs" in answer
    usage = subprocess.run([sys.executable, "-m", "qa.agent.lock_probe"], capture_output=True, text=True, env=env,
                           timeout=60, check=False)
    assert usage.returncode == 2 and "usage" in usage.stderr


# --- the harness's end, with the agent's probe and with stand-ins -----------------------------------------------


def _bot(tmp_path: Path, lock_probe: list[str] | None, capabilities: tuple[str, ...] = ("lock",)) -> BotUnderTest:
    state = tmp_path / "state"
    (state / "sessions").mkdir(parents=True, exist_ok=True)
    bot_file = BotFile(name="b", command=["{python}", "-c", "pass"], lock_probe=lock_probe,
                       capabilities=list(capabilities))
    values = {"state_dir": str(state), "python": sys.executable, "config": "", "trace_file": "", "bot_dir": "",
              "scenario": "s"}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launch = Launch([sys.executable, "-c", "pass"], env, tmp_path, None, None, values=values)
    return BotUnderTest(bot_file, launch, tmp_path / "bot.log", tmp_path / "trace.jsonl", tmp_path / "copy.jsonl", [])


AGENT_PROBE = builtin_bot_file().lock_probe


async def _until(condition: Any, bound_s: float = RESULTS_WAIT_S) -> None:
    """Until `condition()` holds or `bound_s` passes (the assertions after say what was missing). Bounded in time,
    not in turns: 400 turns of 10 ms were 4 s, near what a loaded machine can take for a probe process's answer."""
    deadline = asyncio.get_running_loop().time() + bound_s
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # polling a list the prober fills, not a synchronization point

async def test_a_probe_per_model_request_through_the_agents_own_probe(tmp_path: Path) -> None:
    assert AGENT_PROBE is not None
    bot = _bot(tmp_path, AGENT_PROBE)
    results: list[dict[str, Any]] = []
    prober = await start_prober(bot, results, None)
    assert prober is not None
    await bot.trace.append({"t": 1, "type": "model.request.start", "session": "!r:x/main"})
    await bot.trace.append({"t": 2, "type": "lock.acquire", "session": "!r:x/main"})
    await bot.trace.append({"t": 3, "type": "model.request.start", "session": "!r:x/t"})
    await _until(lambda: len(results) == 2)
    assert await stop_prober(prober) is None
    assert [r["session"] for r in results] == ["!r:x/main", "!r:x/t"]
    assert all(set(r) == {"session", "t", "acquiredElapsedMs"} for r in results)
    assert not (tmp_path / "lock-probe.log").exists(), "an empty probe log is not kept"


async def test_a_bot_with_lock_but_no_probe_is_not_checked_never_a_silent_pass(tmp_path: Path) -> None:
    results: list[dict[str, Any]] = []
    assert await start_prober(_bot(tmp_path, None), results, None) is None
    assert results == [{"session": "-", "error": NOT_CHECKED}]
    assert "NOT CHECKED" in NOT_CHECKED and "lock_probe" in NOT_CHECKED


def _standin(tmp_path: Path, code: str) -> list[str]:
    script = tmp_path / "probe.py"
    script.write_text(code)
    return ["{python}", str(script)]


async def test_a_probe_that_never_gets_ready_is_not_checked_with_the_reason(tmp_path: Path) -> None:
    results: list[dict[str, Any]] = []
    bot = _bot(tmp_path, _standin(tmp_path, "print('{\"ready\": false}', flush=True)"))
    assert await start_prober(bot, results, None) is None
    assert results == [{"session": "-", "error": 'contention probe NOT CHECKED: the lock_probe wrote '
                                                 '{"ready": false} first, not {"ready": true}'}]
    results.clear()
    bot = _bot(tmp_path, _standin(tmp_path, "print('starting', flush=True)"))
    assert await start_prober(bot, results, None) is None
    assert results[0]["error"] == 'contention probe NOT CHECKED: the lock_probe wrote "starting", not JSON'
    results.clear()
    bot = _bot(tmp_path, _standin(tmp_path, "import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)"))
    assert await start_prober(bot, results, None) is None
    assert "exited before its ready line" in results[0]["error"]
    assert (tmp_path / "lock-probe.log").read_text() == "oops\n", "its stderr is kept when it says something"
    results.clear()
    bot = _bot(tmp_path, ["/nonexistent/probe"])
    assert await start_prober(bot, results, None) is None
    assert "could not be started (/nonexistent/probe)" in results[0]["error"]


async def test_a_probe_that_answers_wrongly_or_dies_is_reported_by_stop(tmp_path: Path) -> None:
    code = ("import json, sys\nprint(json.dumps({'ready': True}), flush=True)\nsys.stdin.readline()\n"
            "print('not json', flush=True)\n")
    bot = _bot(tmp_path, _standin(tmp_path, code))
    prober = await start_prober(bot, [], None)
    assert prober is not None
    await bot.trace.append({"t": 1, "type": "model.request.start", "session": "s"})
    await asyncio.wait({prober.task}, timeout=10)
    problem = await stop_prober(prober)
    assert problem == "contention probe failed: the lock_probe wrote \"not json\", not JSON"


async def test_a_probe_that_hangs_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qa.harness.probe as probe_module

    monkeypatch.setattr(probe_module, "ANSWER_TIMEOUT_S", 0.3)
    code = ("import json, sys, time\nprint(json.dumps({'ready': True}), flush=True)\nsys.stdin.readline()\n"
            "time.sleep(60)\n")
    bot = _bot(tmp_path, _standin(tmp_path, code))
    probe = await ProbeProcess.start(bot, None)
    began = asyncio.get_running_loop().time()
    with pytest.raises(ProbeFailed, match=r"gave no answer within 0.3s; see .*lock-probe.log"):
        await probe.ask("s")
    await probe.close()
    # The answer's 0.3 s and the close's bounded wait, not the probe's 60 s sleep (loose: a loaded machine is slow).
    assert asyncio.get_running_loop().time() - began < 30
    assert probe.proc.returncode is not None, "killed when it did not go by itself"


async def test_the_prober_waits_out_a_restart_of_the_bot(tmp_path: Path) -> None:
    assert AGENT_PROBE is not None
    bot = _bot(tmp_path, AGENT_PROBE)
    results: list[dict[str, Any]] = []
    probe = await ProbeProcess.start(bot, None)
    task = asyncio.create_task(follow_and_probe(bot, probe, results))
    await bot.trace.close("bot process exited with code 0")
    await asyncio.sleep(0.05)
    await bot.trace.reopen()
    await bot.trace.append({"t": 1, "type": "model.request.start", "session": "s"})
    await _until(lambda: bool(results))
    assert await stop_prober(Prober(task, probe)) is None
    assert [r["session"] for r in results] == ["s"]


async def _held_probe(tmp_path: Path) -> tuple[ProbeProcess, asyncio.StreamReader, int, Any]:
    """A ProbeProcess whose answers the test feeds by hand (its stdout a bare StreamReader), around a real
    process in its own session for `close` to kill; the read end of its stdin pipe shows what it was asked."""
    reader = asyncio.StreamReader()
    sleeper = await asyncio.create_subprocess_exec("sleep", "60", start_new_session=True)
    asked, ask = os.pipe()
    os.set_blocking(asked, False)
    return ProbeProcess(SimpleNamespace(stdout=reader, pid=sleeper.pid), ask, tmp_path / "lock-probe.log"), \
        reader, asked, sleeper


async def _until_asked(asked: int) -> bytes:
    for _ in range(1000):
        try:
            return os.read(asked, 4096)
        except BlockingIOError:
            await asyncio.sleep(0.01)
    raise AssertionError("the prober never asked its probe")


async def test_a_stop_that_lands_as_the_answer_comes_still_stops_the_prober(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The answer and the cancellation in the same turn of the loop: Python 3.11's asyncio.wait_for returned the
    # answer and dropped the cancellation, so the prober went on waiting for the next model request, stop_prober
    # gave up on it, and the task was left pending until the garbage collector closed it at the loop's end
    # ("coroutine ignored GeneratorExit": its `finally` awaited the probe's close).
    import qa.harness.probe as harness_probe

    monkeypatch.setattr(harness_probe, "STOP_TIMEOUT_S", 2.0)
    probe, reader, asked, sleeper = await _held_probe(tmp_path)
    bot = _bot(tmp_path, AGENT_PROBE)
    task = asyncio.create_task(follow_and_probe(bot, probe, []))
    await bot.trace.append({"t": 1, "type": "model.request.start", "session": "s"})
    assert json.loads(await _until_asked(asked)) == {"session": "s", "timeoutMs": 25}
    reader.feed_data(b'{"t": 2, "acquiredElapsedMs": 0.5}\n')
    reader.feed_eof()  # the close finds its end of file at once
    problem = await stop_prober(Prober(task, probe))  # cancels before its first await: the answer's turn
    assert problem is None
    assert task.done(), "the prober is left pending"
    assert await asyncio.wait_for(sleeper.wait(), 10) is not None, "the probe process is stopped with it"
    os.close(asked)


@pytest.mark.parametrize("turns", range(8))
async def test_a_stop_at_any_point_leaves_no_task_and_no_process(tmp_path: Path, turns: int) -> None:
    # Cancelled after 0..7 turns of the loop: before the task's first step (its own `finally` never runs, so
    # the probe process was left behind), while it waits for a model request, while it waits for the answer,
    # and after it. Each time the task ends, the probe process with it, and nothing else is left pending.
    probe, reader, asked, sleeper = await _held_probe(tmp_path)
    bot = _bot(tmp_path, AGENT_PROBE)
    prober = Prober(asyncio.create_task(follow_and_probe(bot, probe, [])), probe)
    await bot.trace.append({"t": 1, "type": "model.request.start", "session": "s"})
    reader.feed_data(b'{"t": 2, "acquiredElapsedMs": 0.5}\n')  # answered as soon as asked
    reader.feed_eof()
    for _ in range(turns):
        await asyncio.sleep(0)
    assert await stop_prober(prober) is None
    assert prober.task.done()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    assert await asyncio.wait_for(sleeper.wait(), 10) is not None, "the probe process is stopped"
    os.close(asked)


def test_a_timeout_names_the_earliest_hold_it_saw_when_the_lock_changed_hands(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Hold A (taken at 1000) is released during the probe's first wait and hold B taken at once (at ~1003): the
    # probe was kept out by A first, and A is the one that may have spanned a model request.
    now = [1000.0]
    monkeypatch.setattr(lock_module, "mono_ms", lambda: now[0])
    monkeypatch.setattr(probe_module, "mono_ms", lambda: now[0])
    transcript = tmp_path / transcript_file_name("!r:x/main")
    holder = SessionWriteLock(transcript, LockSettings())
    holds = [holder.acquire_sync("a", "reply")]

    def sleep(seconds: float) -> None:
        now[0] += seconds * 1000
        if len(holds) == 1:
            holds[0].release()
            holds.append(holder.acquire_sync("b", "reply"))

    monkeypatch.setattr(lock_module, "time", SimpleNamespace(sleep=sleep))
    result = probe_once(tmp_path, "!r:x/main", 25)
    assert result["timeoutElapsedMs"] >= 25
    assert result["heldSinceT"] == 1000.0
    assert holds[1].still_owned()
