"""The lock doctor: pure judgement, exit codes, and the listing/fix over real lock files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qa.kernel.clock import mono_ms
from qa.kernel.doctor import run_doctor
from qa.kernel.lock_settings import LockSettings
from qa.kernel.lockfile import Judgement, Observation, exit_code, judge

SETTINGS = LockSettings(stale_ms=30_000, max_hold_ms=5_000)


def obs(pid: int | None = 10, alive: bool | None = True, age: float = 100.0,
        promised: int | None = 5_000) -> Observation:
    return Observation(path="p", pid=pid, alive=alive, age_ms=age, attempt="a", promised_max_hold_ms=promised)


def test_live_young_holder_is_fine() -> None:
    assert judge(obs(), SETTINGS) == Judgement("held", problem=False, fixable=False, why="held by live pid 10")


def test_dead_owner_is_the_only_fixable_state() -> None:
    verdict = judge(obs(alive=False, age=1.0), SETTINGS)
    assert (verdict.state, verdict.problem, verdict.fixable) == ("owner-dead", True, True)
    assert "pid 10 is not running" in verdict.why


@pytest.mark.parametrize(("age", "promised", "state"), [
    (5_000.0, 5_000, "held"), (5_001.0, 5_000, "over-max-hold"),
    # The holder's longer promise is honoured; a shorter one does not undercut ours.
    (9_000.0, 10_000, "held"), (10_001.0, 10_000, "over-max-hold"), (4_000.0, 1_000, "held"),
    # No usable promise: our maxHoldMs.
    (5_001.0, None, "over-max-hold"), (5_001.0, 0, "over-max-hold"), (4_999.0, 0, "held"),
])
def test_max_hold_is_judged_like_the_lock_itself(age: float, promised: int | None, state: str) -> None:
    verdict = judge(obs(age=age, promised=promised), SETTINGS)
    assert verdict.state == state
    assert verdict.problem is (state == "over-max-hold") and verdict.fixable is False


def test_over_max_hold_names_the_limit() -> None:
    assert "over maxHoldMs 5000" in judge(obs(age=6_000.0), SETTINGS).why


@pytest.mark.parametrize(("age", "problem"), [(30_000.0, False), (30_001.0, True)])
def test_unreadable_lock_is_a_problem_only_past_stale_ms_and_never_fixable(age: float, problem: bool) -> None:
    verdict = judge(obs(pid=None, alive=None, age=age), SETTINGS)
    assert (verdict.state, verdict.problem, verdict.fixable) == ("unreadable", problem, False)
    assert ("older" if problem else "younger") in verdict.why


def test_exit_code_counts_problems_left_after_fixing() -> None:
    ok = Judgement("held", False, False, "")
    bad = Judgement("owner-dead", True, True, "")
    assert exit_code([], []) == 0
    assert exit_code([ok], [False]) == 0
    assert exit_code([ok, bad], [False, False]) == 1
    assert exit_code([ok, bad], [False, True]) == 0


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def plant(path: Path, pid: int, age_ms: float = 0.0, promised: int = 5_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "createdMono": mono_ms() - age_ms, "token": "t", "attempt": "turn-1",
                                "maxHoldMs": promised}))


def test_fix_removes_only_the_dead_owners_lock(tmp_path: Path) -> None:
    dead = tmp_path / "state" / "sessions" / "a.jsonl.lock"
    live = tmp_path / "state" / "sessions" / "b.jsonl.lock"
    runaway = tmp_path / "other" / "sessions" / "c.jsonl.lock"
    plant(dead, dead_pid())
    plant(live, os.getpid())
    plant(runaway, os.getpid(), age_ms=60_000)
    lines: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=False, as_json=False, out=lines.append) == 1
    # Sorted by path: other/… before state/….
    assert [line.split()[0] for line in lines[:3]] == ["over-max-hold", "owner-dead", "held"]
    assert lines[-1] == "3 lock(s), 0 removed, 2 problem(s) left"
    assert dead.exists()
    lines.clear()
    # The runaway holder is alive: reported, not removed, so the exit code still says something is wrong.
    assert run_doctor(tmp_path, SETTINGS, fix=True, as_json=False, out=lines.append) == 1
    assert not dead.exists() and live.exists() and runaway.exists()
    assert lines[1].endswith("[removed]") and not lines[0].endswith("[removed]")
    assert lines[-1] == "3 lock(s), 1 removed, 1 problem(s) left"


def test_json_output_and_a_clean_tree(tmp_path: Path) -> None:
    plant(tmp_path / "s.jsonl.lock", os.getpid())
    out: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=True, as_json=True, out=out.append) == 0
    [row] = json.loads(out[0])
    assert (row["state"], row["pid"], row["alive"], row["fixed"]) == ("held", os.getpid(), True, False)
    out.clear()
    (tmp_path / "s.jsonl.lock").unlink()
    assert run_doctor(tmp_path, SETTINGS, fix=False, as_json=False, out=out.append) == 0
    assert out == [f"no session locks under {tmp_path}"]


def test_command_lines_exit_2_on_bad_input_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for argv in (["-m", "qa.agent", "doctor", "--state-dir", str(tmp_path / "nope")],
                 ["-m", "qa.cli", "doctor", str(tmp_path), "--stale-ms", "soon"],
                 ["-m", "qa.cli", "doctor"]):
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "qa.cli", "doctor", str(tmp_path), "--stale-ms", "soon"],
                          capture_output=True, text=True, env=env, check=False)
    assert "--stale-ms='soon'" in proc.stderr
    plant(tmp_path / "x.jsonl.lock", dead_pid())
    proc = subprocess.run([sys.executable, "-m", "qa.agent", "doctor", "--state-dir", str(tmp_path), "--fix"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0 and "[removed]" in proc.stdout


def test_an_artifacts_directory_is_judged_from_its_traces(tmp_path: Path) -> None:
    def trace(sid: str, *records: dict[str, object]) -> None:
        path = tmp_path / "scenarios" / sid / "bot-trace.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))

    common = {"session": "!r/main", "attempt": "turn-1"}
    trace("clean", {"t": 0, "type": "start", "pid": 42},
          {"t": 1, "type": "lock.acquire", "purpose": "inbound", **common},
          {"t": 2, "type": "lock.release", "purpose": "inbound", **common})
    trace("leaky", {"t": 0, "type": "start", "pid": 43}, {"t": 1, "type": "lock.acquire", "purpose": "skip", **common},
          {"t": 251, "type": "turn.end", **common})
    (tmp_path / "matrix-qa-summary.json").write_text("{}")
    out: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=True, as_json=False, out=out.append) == 1
    assert len(out) == 2
    assert out[0].startswith("left-held      pid=43 (unknown) age=250ms attempt=turn-1 ")
    assert "scenarios/leaky/bot-trace.jsonl session=!r/main: hold (skip) still open" in out[0]
    assert out[1] == "1 lock(s), 0 removed, 1 problem(s) left"


# --- what the mutation run of the doctor (then qa/agent/doctor.py) found untested -----------------------------


def test_the_reasons_are_exact() -> None:
    assert judge(obs(alive=False), SETTINGS).why == "owner pid 10 is not running"
    assert judge(obs(age=6_000.0), SETTINGS).why == "live owner pid 10 has held it 6000ms, over maxHoldMs 5000"
    assert judge(obs(pid=None, alive=None, age=1.0), SETTINGS).why == "unreadable payload, younger than staleMs 30000"
    assert judge(obs(pid=None, alive=None, age=40_000.0), SETTINGS).why == \
        "unreadable payload, older than staleMs 30000"


def test_observe_reads_the_promise_and_refuses_non_integers(tmp_path: Path) -> None:
    from qa.kernel.lockfile import observe
    from qa.kernel.lockfile import read_lock as view_lock

    path = tmp_path / "s.jsonl.lock"
    for promised, seen in ((10_000, 10_000), ("10000", None), (True, None)):
        plant(path, os.getpid(), promised=promised)  # type: ignore[arg-type]
        view = view_lock(path)
        assert view is not None
        assert observe(path, view, lambda pid: False).promised_max_hold_ms == seen
        assert observe(path, view, lambda pid: False).alive is False


def test_render_lines_are_exact(tmp_path: Path) -> None:
    from qa.kernel.doctor import Row, render

    rows = [Row(obs(), judge(obs(), SETTINGS), False),
            Row(obs(pid=None, alive=None), judge(obs(pid=None, alive=None), SETTINGS), False),
            Row(obs(alive=False), judge(obs(alive=False), SETTINGS), True)]
    assert render(rows, tmp_path) == [
        "held           pid=10 (alive) age=100ms attempt=a p: held by live pid 10",
        "unreadable     pid=? (unknown) age=100ms attempt=a p: unreadable payload, younger than staleMs 30000",
        "owner-dead     pid=10 (dead) age=100ms attempt=a p: owner pid 10 is not running [removed]",
        "3 lock(s), 1 removed, 0 problem(s) left",
    ]


def test_a_lock_left_in_a_trace_is_never_fixable(tmp_path: Path) -> None:
    from qa.kernel.doctor import from_traces

    path = tmp_path / "scenarios" / "s" / "bot-trace.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"t": 1, "type": "lock.acquire", "session": "!r", "attempt": "a", "purpose": "p"})
                    + "\n" + json.dumps({"t": 2, "type": "x"}) + "\n")
    [row] = from_traces(tmp_path)
    assert (row.judgement.problem, row.judgement.fixable, row.observation.pid) == (True, False, None)


def test_max_hold_ms_flag_is_named_in_its_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "qa.cli", "doctor", str(tmp_path), "--max-hold-ms", "0"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("matrix-qa doctor: --max-hold-ms='0': expected"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "qa.agent", "doctor"], capture_output=True, text=True, env=env,
                          check=False)
    assert proc.returncode == 2 and "--state-dir" in proc.stderr


# --- what the mutation re-run of qa/kernel/doctor.py (wave 5) found untested --------------------------------------


def _main(argv: list[str], capsys, positional: bool = True) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    from qa.kernel.doctor import doctor_main

    code = doctor_main(argv, "matrix-qa doctor" if positional else "python -m qa.agent doctor", positional)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_directory_named_like_a_lock_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "sessions" / "d.jsonl.lock").mkdir(parents=True)
    out: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=False, as_json=False, out=out.append) == 0
    assert out == [f"no session locks under {tmp_path}"]


def test_a_lock_released_while_the_doctor_looks_is_left_out_and_the_rest_still_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.kernel import doctor

    plant(tmp_path / "a.jsonl.lock", os.getpid())
    plant(tmp_path / "b.jsonl.lock", os.getpid())
    real = doctor.read_lock
    monkeypatch.setattr(doctor, "read_lock", lambda path: None if path.name == "a.jsonl.lock" else real(path))
    out: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=False, as_json=False, out=out.append) == 0
    assert len(out) == 2 and out[0].startswith("held ") and out[0].endswith(f"{tmp_path / 'b.jsonl.lock'}: held by "
                                                                            f"live pid {os.getpid()}")
    assert out[1] == "1 lock(s), 0 removed, 0 problem(s) left"


def test_render_shows_an_unknown_attempt_and_counts_only_problems_not_fixed(tmp_path: Path) -> None:
    from qa.kernel.doctor import Row, render

    nameless = Observation(path="p", pid=10, alive=True, age_ms=1.4, attempt=None, promised_max_hold_ms=None)
    dead = obs(alive=False)
    rows = [Row(nameless, judge(nameless, SETTINGS), False), Row(dead, judge(dead, SETTINGS), False)]
    assert render(rows, tmp_path) == [
        "held           pid=10 (alive) age=1ms attempt=? p: held by live pid 10",
        "owner-dead     pid=10 (dead) age=100ms attempt=a p: owner pid 10 is not running",
        "2 lock(s), 0 removed, 1 problem(s) left",
    ]


def test_a_trace_row_is_exact(tmp_path: Path) -> None:
    """The row an artifacts directory gives: its path names the trace and session, the pid only when the start
    record has an integer one, the age is how long the hold was open, and it is a problem nothing can fix."""
    from qa.kernel.doctor import from_traces

    path = tmp_path / "scenarios" / "s" / "bot-trace.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"t": 0, "type": "start", "pid": "42"},
        {"t": 10, "type": "lock.acquire", "session": "!r", "attempt": "turn-2", "purpose": "inbound"},
        {"t": 1510.4, "type": "x"})))
    [row] = from_traces(tmp_path)
    assert row.observation == Observation(path=f"{path} session=!r", pid=None, alive=None, age_ms=1500.4,
                                          attempt="turn-2", promised_max_hold_ms=None)
    assert row.judgement == Judgement("left-held", problem=True, fixable=False,
                                      why="hold (inbound) still open when the trace ends, 1500ms after it was taken")
    assert row.fixed is False
    (tmp_path / "scenarios" / "other" / "nested").mkdir(parents=True)  # only scenarios/*/bot-trace.jsonl counts
    (tmp_path / "scenarios" / "other" / "nested" / "bot-trace.jsonl").write_text(path.read_text())
    (tmp_path / "bot-trace.jsonl").write_text(path.read_text())
    assert len(from_traces(tmp_path)) == 1


def test_run_doctor_refuses_what_is_not_a_directory(tmp_path: Path) -> None:
    out: list[str] = []
    assert run_doctor(tmp_path / "nope", SETTINGS, fix=False, as_json=False, out=out.append) == 2
    assert out == [f"doctor: {tmp_path / 'nope'}: not a directory"]


def test_the_json_rows_are_whole(tmp_path: Path) -> None:
    lock = tmp_path / "s.jsonl.lock"
    plant(lock, os.getpid())
    out: list[str] = []
    assert run_doctor(tmp_path, SETTINGS, fix=False, as_json=True, out=out.append) == 0
    [row] = json.loads(out[0])
    assert list(row) == ["path", "pid", "alive", "age_ms", "attempt", "promised_max_hold_ms", "state", "problem",
                         "fixable", "why", "fixed"]
    assert (row["path"], row["attempt"], row["promised_max_hold_ms"], row["problem"], row["fixable"]) == \
        (str(lock), "turn-1", 5_000, False, False)
    assert out[0].startswith("[\n  {\n    \"path\""), "indented by two"


def test_the_limits_on_the_command_line_are_the_ones_judged_by(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--stale-ms judges the unreadable lock, --max-hold-ms the runaway one; without them the defaults do."""
    torn = tmp_path / "torn.jsonl.lock"
    torn.write_text("{not json")
    # 5 s old: young for the default 30 s, old for --stale-ms 1000, whatever the file clock's granularity (a
    # lock written this instant could read as 0 ms old, and the test then failed under load).
    os.utime(torn, (time.time() - 5, time.time() - 5))
    code, out, _ = _main([str(tmp_path)], capsys)
    assert code == 0 and out.startswith("unreadable     pid=? (unknown)"), out
    code, out, _ = _main([str(tmp_path), "--stale-ms", "1000"], capsys)
    assert code == 1 and "older than staleMs 1000\n" in out, out
    (tmp_path / "torn.jsonl.lock").unlink()
    plant(tmp_path / "run.jsonl.lock", os.getpid(), age_ms=60_000)
    assert _main([str(tmp_path)], capsys)[0] == 1
    code, out, _ = _main([str(tmp_path), "--max-hold-ms", "120000"], capsys)
    assert code == 0 and "held by live pid" in out, out
    code, out, _ = _main(["--state-dir", str(tmp_path), "--max-hold-ms", "120000", "--json"], capsys,
                         positional=False)
    assert code == 0 and json.loads(out)[0]["state"] == "held"


def test_the_command_line_refusals_are_exact(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _main([str(tmp_path / "nope")], capsys)
    assert (code, out, err) == (2, "", f"matrix-qa doctor: {tmp_path / 'nope'}: not a directory\n")
    code, _, err = _main([str(tmp_path), "--stale-ms", "0"], capsys)
    assert code == 2 and err.startswith("matrix-qa doctor: --stale-ms='0': expected"), err
    with pytest.raises(SystemExit) as exited:
        _main([], capsys, positional=False)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("python -m qa.agent doctor: the following arguments are required: "
                                              "--state-dir")
    (tmp_path / "x.jsonl.lock").write_text("{}")
    code, out, _ = _main(["--state-dir", str(tmp_path), "--fix"], capsys, positional=False)
    assert code == 0 and out.startswith("unreadable ")


def test_a_row_cannot_change_under_its_verdict() -> None:
    import dataclasses

    from qa.kernel.doctor import Row

    row = Row(obs(), judge(obs(), SETTINGS), False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.fixed = True  # type: ignore[misc]


def test_the_max_hold_refusal_names_the_flag_in_process(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = _main([str(tmp_path), "--max-hold-ms", "0"], capsys)
    assert code == 2 and err.startswith("matrix-qa doctor: --max-hold-ms='0': expected"), err
    assert "session.writeLock" not in err


def test_directories_it_cannot_enter_are_named_not_read_as_empty(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Run as root here, where every directory is readable: which ones are is asked of os.access, faked."""
    import os as real_os

    asked: list[int] = []
    closed = {"a", "b", "c", "d", "e", "f"}

    def access(path: object, mode: int) -> bool:
        asked.append(mode)
        return Path(str(path)).name not in closed

    deepest = tmp_path / "x" / "a" / "b" / "c" / "d" / "e" / "f"  # one per level: the walk's order is known
    deepest.mkdir(parents=True)
    monkeypatch.setattr("qa.kernel.doctor.os.access", access)
    code, out, err = _main([str(tmp_path)], capsys)
    shown = ", ".join(str(tmp_path / "x" / "abcde"[: i + 1].replace("", "/")[1:-1]) for i in range(5))
    assert (code, out) == (2, "") and err == (f"matrix-qa doctor: cannot read {shown} (permission denied): its "
                                              "session locks cannot be listed\n"), err
    assert set(asked) == {real_os.R_OK | real_os.X_OK}
    closed.add(tmp_path.name)
    code, _, err = _main([str(tmp_path)], capsys)
    assert code == 2 and err.startswith(f"matrix-qa doctor: cannot read {tmp_path}, {tmp_path / 'x' / 'a'}, "), err
