"""Someone else's stale lock may hold anything: the kernel's reader (used by the doctor and by the agent's own
lock code) and the doctor never crash on one (qa.kernel.lockfile, qa.kernel.doctor)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qa.kernel.doctor import run_doctor
from qa.kernel.lock_settings import resolve_lock_settings
from qa.kernel.lockfile import MAX_PID, pid_alive, read_lock, valid_payload
from qa.kernel.trace import read_trace

GOOD = {"pid": 123, "createdMono": 5.0, "token": "t", "attempt": "a"}


@pytest.mark.parametrize("changes", [
    {"pid": MAX_PID + 1}, {"pid": 2 ** 70}, {"pid": 10 ** 400}, {"pid": -1}, {"pid": True}, {"pid": "1"},
    {"createdMono": 10 ** 400}, {"createdMono": float("inf")}, {"createdMono": float("nan")}, {"createdMono": "1"},
    {"token": ""}, {"attempt": 5},
])
def test_payloads_of_the_wrong_shape_or_size_are_no_payload(changes: dict[str, object]) -> None:
    assert valid_payload({**GOOD, **changes}) is None
    assert valid_payload(GOOD) == GOOD and valid_payload({**GOOD, "pid": MAX_PID, "maxHoldMs": 5}) is not None
    # A promise of the wrong type or size is ignored where it is read (observe, the agent), not the whole lock.
    assert valid_payload({**GOOD, "maxHoldMs": 10 ** 400}) is not None


@pytest.mark.parametrize("content", [
    b"[" * 100_000, b'{"pid": ' + b"9" * 5000 + b', "createdMono": 1, "token": "t"}', b"\xff\xfe", b"[1, 2]",
    b'{"pid": 1e999, "createdMono": NaN, "token": "t"}', b"x" * (1 << 20),
])
def test_a_lock_file_of_any_content_reads_as_a_lock_without_payload(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.jsonl.lock"
    path.write_bytes(content)
    view = read_lock(path)
    assert view is not None and view.payload is None and view.pid is None and view.age_ms() >= 0


def test_unreadable_directory_fifo_and_missing_locks(tmp_path: Path) -> None:
    (tmp_path / "dir.lock").mkdir()
    assert read_lock(tmp_path / "dir.lock") is not None and read_lock(tmp_path / "dir.lock").payload is None
    os.mkfifo(tmp_path / "fifo.lock")
    assert read_lock(tmp_path / "fifo.lock").payload is None, "never blocks on a FIFO"
    assert read_lock(tmp_path / "missing.lock") is None
    os.symlink("loop.lock", tmp_path / "loop.lock")
    assert read_lock(tmp_path / "loop.lock") is None or read_lock(tmp_path / "loop.lock").payload is None
    locked = tmp_path / "locked.lock"
    locked.write_text(json.dumps(GOOD))
    locked.chmod(0)
    view = read_lock(locked)
    assert view is not None and (view.payload is None or os.geteuid() == 0)


def test_pid_alive_takes_any_integer() -> None:
    assert pid_alive(2 ** 70) is False and pid_alive(os.getpid()) is True


def test_the_doctor_reports_every_hostile_lock_and_trace_line_without_crashing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "a.jsonl.lock").write_bytes(b"[" * 100_000)
    (state / "b.jsonl.lock").write_text(json.dumps({**GOOD, "pid": 2 ** 70}))
    (state / "c.jsonl.lock").write_text(json.dumps({**GOOD, "createdMono": 1e308, "maxHoldMs": 10 ** 30}))
    (state / "d.jsonl.lock").mkdir()
    trace = tmp_path / "scenarios" / "x" / "bot-trace.jsonl"
    trace.parent.mkdir(parents=True)
    trace.write_bytes(b'[1]\n{"t": ' + b"9" * 5000 + b'}\n' + b"[" * 100_000 + b"\n\xff\n"
                      + b'{"type": "start", "pid": 1}\n')
    assert read_trace(trace) == [{"type": "start", "pid": 1}]
    settings, _ = resolve_lock_settings({}, {})
    code = run_doctor(tmp_path, settings, fix=True, as_json=False, out=print)
    out = capsys.readouterr().out
    assert code in (0, 1) and "lock(s)" in out and "Traceback" not in out
    assert out.count("unreadable") >= 3, out


@pytest.mark.parametrize(("chunk", "where"), [
    ({"delta": "x"}, ["delta"]),
    ({"delta": {"content": 5}}, ["delta", "content"]),
    ({"delta": {}, "finish_reason": ["stop"]}, ["finish_reason"]),
    ({"delta": {"tool_calls": "x"}}, ["delta", "tool_calls"]),
    ({"delta": {"tool_calls": ["x"]}}, ["delta", "tool_calls", 0]),
    ({"delta": {"tool_calls": [{"index": "0"}]}}, ["delta", "tool_calls", 0, "index"]),
    ({"delta": {"tool_calls": [{"index": 10 ** 400}]}}, ["delta", "tool_calls", 0, "index"]),
    ({"delta": {"tool_calls": [{"index": True}]}}, ["delta", "tool_calls", 0, "index"]),
    ({"delta": {"tool_calls": [{"id": 5}]}}, ["delta", "tool_calls", 0, "id"]),
    ({"delta": {"tool_calls": [{"function": "f"}]}}, ["delta", "tool_calls", 0, "function"]),
    ({"delta": {"tool_calls": [{"function": {"name": 1}}]}}, ["delta", "tool_calls", 0, "function", "name"]),
    ({"delta": {"tool_calls": [{"function": {"arguments": {}}}]}}, ["delta", "tool_calls", 0, "function", "arguments"]),
])
def test_a_cassette_chunk_of_the_wrong_shape_is_named_where(chunk: dict[str, object], where: list[object]) -> None:
    from qa.provider.cassette import chunk_problem
    problem = chunk_problem(chunk)
    assert problem is not None and problem[0] == where


def test_a_sound_chunk_has_no_problem() -> None:
    from qa.provider.cassette import chunk_problem
    assert chunk_problem({"delta": {"content": "a", "tool_calls": [
        {"index": 999, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "stop"}) is None
    assert chunk_problem({"usage": {}}) is None and chunk_problem({"delta": {"content": None}}) is None


def test_a_checker_that_calls_sys_exit_is_a_config_error_naming_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    from qa.harness.botfile import check_env, load_bot_file
    from qa.kernel.errors import ConfigError

    module = types.ModuleType("mqa_exiting_checker")
    module.check = lambda env: sys.exit("bye")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mqa_exiting_checker", module)
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [x]\nenv_check: 'mqa_exiting_checker:check'\n")
    with pytest.raises(ConfigError, match=r"b.yaml: env_check mqa_exiting_checker:check failed on .*SystemExit: bye"):
        check_env(load_bot_file(tmp_path / "b.yaml"), {})
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.yaml").write_text("name: c\ncommand: [x]\nenv_check: 'exits_on_import:check'\n")
    with pytest.raises(ConfigError, match="env_check exits_on_import:check: cannot load it: 3"):
        check_env(load_bot_file(tmp_path / "c.yaml"), {})
