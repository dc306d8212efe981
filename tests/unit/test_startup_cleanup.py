"""Startup cleanup of dead processes' locks, the plant-stale-lock state mutation, and the prompt gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa.agent.lock import SessionWriteLock, read_takeovers, release_all_held
from qa.agent.prompt_gate import Skip, skip_for, strip_mention
from qa.agent.session import transcript_file_name
from qa.agent.startup_cleanup import startup_cleanup
from qa.agent.state_tools import main as state_tools
from qa.kernel.clock import mono_ms
from qa.kernel.lock_settings import LockSettings
from qa.kernel.trace import Trace, read_trace


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant(path: Path, pid: int, **extra: object) -> None:
    path.write_text(json.dumps({"pid": pid, "createdMono": mono_ms(), "token": "t0", "attempt": "turn-9-1",
                                "maxHoldMs": 5000, **extra}))


def test_dead_owners_locks_are_reclaimed_and_traced_live_ones_kept(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    (sessions / "a.meta.json").write_text(json.dumps({"key": "!r:hs/main"}))
    dead = sessions / "a.jsonl.lock"
    live = sessions / "b.jsonl.lock"
    earlier_me = sessions / "c.jsonl.lock"
    pid = dead_pid()
    plant(dead, pid)
    plant(live, os.getppid())
    plant(earlier_me, os.getpid(), instance="a previous run")
    trace = Trace(tmp_path / "trace.jsonl")
    assert startup_cleanup(sessions, LockSettings(), trace) == 2
    trace.close()
    assert not dead.exists() and not earlier_me.exists() and live.exists()
    records = read_trace(tmp_path / "trace.jsonl")
    reclaims = [r for r in records if r["type"] == "lock.reclaim"]
    assert [(r["session"], r["previous"]["pid"], r["previous"]["attempt"], r["reason"]) for r in reclaims] == [
        ("!r:hs/main", pid, "turn-9-1", "owner-dead"), ("c.jsonl", os.getpid(), "turn-9-1", "owner-dead")]
    assert all(r["previous"]["ageMs"] >= 0 for r in reclaims)
    assert records[-1]["type"] == "lock.startup" and (records[-1]["locks"], records[-1]["reclaimed"]) == (3, 2)
    # Logged like a takeover, so that attempt's fence would see it.
    assert read_takeovers(sessions / "a.jsonl")[0]["previous"]["attempt"] == "turn-9-1"


def test_our_own_live_hold_is_not_reclaimed(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    hold = SessionWriteLock(sessions / "a.jsonl", LockSettings()).acquire_sync("t", "x")
    try:
        assert startup_cleanup(sessions, LockSettings(), Trace(None)) == 0
        assert hold.still_owned()
    finally:
        release_all_held()


def test_unreadable_lock_and_missing_dir_are_left_alone(tmp_path: Path) -> None:
    assert startup_cleanup(tmp_path / "none", LockSettings(), Trace(None)) == 0
    (tmp_path / "x.jsonl.lock").write_text("{torn")
    assert startup_cleanup(tmp_path, LockSettings(), Trace(None)) == 0
    assert (tmp_path / "x.jsonl.lock").exists()


def test_plant_stale_lock_plants_a_dead_fresh_lock_per_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MATRIX_QA_ROOM_IDS", "!one:hs,!two:hs")
    assert state_tools(["plant-stale-lock", str(tmp_path)]) == 0
    locks = sorted((tmp_path / "sessions").glob("*.jsonl.lock"))
    expected = sorted(transcript_file_name(f"{r}/main") + ".lock" for r in ("!one:hs", "!two:hs"))
    assert [p.name for p in locks] == expected
    payload = json.loads(locks[0].read_text())
    assert mono_ms() - payload["createdMono"] < 60_000
    with pytest.raises(ProcessLookupError):
        os.kill(payload["pid"], 0)
    assert "planted 2 lock(s)" in capsys.readouterr().out
    # The bot's own cleanup reclaims what was planted.
    assert startup_cleanup(tmp_path / "sessions", LockSettings(), Trace(None)) == 2


@pytest.mark.parametrize("argv", [[], ["nope"], ["plant-stale-lock"], ["plant-stale-lock", "/no/such/state-dir"]])
def test_state_tools_bad_input_is_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert state_tools(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_plant_without_rooms_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MATRIX_QA_ROOM_IDS", raising=False)
    assert state_tools(["plant-stale-lock", str(tmp_path)]) == 1
    assert "no room" in capsys.readouterr().err


@pytest.mark.parametrize(("body", "expected"), [
    ("bot: hello", "hello"), ("@bot:hs: hello", "hello"), ("@bot:hs, hi", "hi"), ("BOT:  x ", "x"),
    ("bot:", ""), ("   ", ""), ("robot: hi", "robot: hi"), ("hello bot: x", "hello bot: x"),
])
def test_strip_mention(body: str, expected: str) -> None:
    assert strip_mention(body, "@bot:hs") == expected


def test_skip_for() -> None:
    assert skip_for("bot:   ", "@bot:hs") == Skip("empty", None)
    assert skip_for("bot: !ping", "@bot:hs") == Skip("command", "pong")
    assert skip_for("bot: !ping now", "@bot:hs") is None
    assert skip_for("bot: hello", "@bot:hs") is None
    assert skip_for("  ", None) == Skip("empty", None)
    assert skip_for("bot: x", None) is None
