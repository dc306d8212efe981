"""The harness as a child subreaper (qa.processes): orphans that left a bot's session and environment come back
to it, and are found and stopped; what it started itself, or what shares its session, is spared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa import processes
from qa.processes import adopted, stat_fields


def test_stat_fields_survive_a_command_name_with_spaces_and_parentheses() -> None:
    assert stat_fields("42 (a) b (c)) S 7 42 99 0 -1") == (7, 99, "S")
    assert stat_fields("42 (x) Z 1 1 1") == (1, 1, "Z")
    assert stat_fields("garbage") is None
    assert stat_fields("42 (x) S notanumber 1 1") is None


def _fake_proc(root: Path, pid: int, ppid: int, session: int) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_text(f"{pid} (sleep) S {ppid} {pid} {session} 0 -1\n")


def test_adopted_is_a_child_in_another_session_that_we_did_not_start(tmp_path: Path) -> None:
    me, mine = os.getpid(), os.getsid(0)
    _fake_proc(tmp_path, 900001, me, 900001)      # an orphan that called setsid: adopted
    _fake_proc(tmp_path, 900002, me, mine)        # our caller's child, in our session: spared
    _fake_proc(tmp_path, 900003, 1, 900003)       # somebody else's
    _fake_proc(tmp_path, 900004, me, 900004)      # one we started: spared
    (tmp_path / "900005").mkdir()                 # gone meanwhile: no stat
    (tmp_path / "self").mkdir()
    processes.own(900004)
    try:
        assert adopted(tmp_path) == [900001]
    finally:
        processes.disown(900004)
    assert adopted(tmp_path) == [900001, 900004]


def test_start_time_is_the_22nd_stat_field() -> None:
    line = "7 (a b) S 1 7 7 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 98765 1000 50"
    assert processes.start_time(line) == 98765
    head = "7 (x) S 1 7 7 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0"
    assert processes.start_time(head) == 0
    assert processes.start_time(head + " x 1") == 0
    assert processes.start_time(head + " 5") == 5


def test_descendants_walk_the_whole_tree_below_a_root_and_nothing_else() -> None:
    table = {(10, 1): 1, (11, 2): 10, (12, 3): 11, (13, 4): 10, (20, 5): 1, (21, 6): 20, (10, 9): 10}
    assert processes.descendants(10, table) == [(11, 2), (13, 4), (12, 3)]
    assert processes.descendants(20, table) == [(21, 6)]
    assert processes.descendants(12, table) == []


def test_an_orphan_is_tied_by_its_record_first_then_by_its_mark() -> None:
    owners = {"/s/a", "/s/b"}
    env_b = b"PATH=/bin\0MATRIX_QA_STATE_DIR=/s/b\0HOME=/"
    assert processes.marked_by(env_b, owners) == "/s/b"
    assert processes.marked_by(b"MATRIX_QA_STATE_DIR=/s/c", owners) is None
    assert processes.marked_by(b"X_MATRIX_QA_STATE_DIR=/s/a\0", owners) is None
    assert processes.marked_by(b"", owners) is None
    assert processes.owner_of((5, 1), env_b, owners, {(5, 1): "/s/a"}) == "/s/a"
    assert processes.owner_of((5, 2), env_b, owners, {(5, 1): "/s/a"}) == "/s/b"  # a recycled pid: not the record
    assert processes.owner_of((5, 1), b"", owners, {(5, 1): "/s/z"}) is None  # a bot of another run
    assert processes.owner_of((5, 1), b"", owners, {}) is None


def test_record_descendants_ties_what_lives_below_a_bot_and_forgets_the_dead(tmp_path: Path) -> None:
    def stat(pid: int, ppid: int, start: int) -> None:
        (tmp_path / str(pid)).mkdir(exist_ok=True)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (x) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 "
                                                  f"{start} 1 1\n")
    stat(100, 1, 7)
    stat(101, 100, 8)
    stat(102, 101, 9)
    processes._TIED[(999, 1)] = "/s/old"
    try:
        assert processes.record_descendants(100, "", tmp_path) == []
        assert processes.record_descendants(100, "/s/a", tmp_path) == [(101, 8), (102, 9)]
        assert processes._TIED == {(101, 8): "/s/a", (102, 9): "/s/a"}
    finally:
        processes.untie_all()


def test_a_spawn_in_flight_defers_the_sweep_unless_forced() -> None:
    with processes.spawning():
        assert processes._spawning == 1
    assert processes._spawning == 0


SCRIPT = r"""
import os, subprocess, sys, time
from qa import processes
assert processes.become_subreaper()
# The helper's output goes nowhere: a sweep that misses it must fail the test when the script ends, not hold the
# test's pipe open until the helper's sleep is over.
HELPER = "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], " \
    "env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid, " \
    "flush=True); sys.stdin.read()"

def parent(env, mark):
    # A process that starts a helper in its own session, says its pid, and exits when told: the helper is orphaned.
    proc = subprocess.Popen([sys.executable, "-c", HELPER.replace("ENV", env)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **({processes.MARK_ENV: mark} if mark else {})})
    processes.own(proc.pid)
    return proc, int(proc.stdout.readline())

def orphan(proc, helper):
    proc.stdin.close()
    proc.wait()
    deadline = time.monotonic() + 10
    while helper not in processes.adopted() and time.monotonic() < deadline:
        time.sleep(0.01)

# Bot A's helper clears its environment: only the record taken while A lived ties it to A.
a, helper_a = parent("{}", "/state/a")
# Bot B's helper keeps its environment: B's mark ties it to B.
b, helper_b = parent("None", "/state/b")
# Not a bot at all (a dockerd the caller started, whose containerd shim outlives it): nobody's to stop.
shim_parent, shim = parent("{}", "")
processes.tie("/state/a")
processes.tie("/state/b")
deadline = time.monotonic() + 10
while not processes.record_descendants(a.pid, "/state/a") and time.monotonic() < deadline:
    time.sleep(0.01)
for proc, helper in ((a, helper_a), (b, helper_b), (shim_parent, shim)):
    orphan(proc, helper)
with processes.spawning():
    assert processes.stop_adopted("/state/a") == []
first = processes.stop_adopted("/state/a")
last = processes.stop_adopted(force=True)
alive = [os.path.exists(f"/proc/{pid}") for pid in (helper_a, helper_b, shim)]
spared = processes.adopted()
os.kill(shim, 9)
os.waitpid(shim, 0)
processes.untie_all()
print(first == [helper_a], last == [helper_b], alive, spared == [shim])
"""


def test_the_sweep_stops_a_bots_escaped_orphans_and_only_those() -> None:
    """Bot A's helper left A's session with a cleared environment; bot B's kept its environment; a third orphan
    descends from no bot. A's stop sweeps only A's, the end of the run B's too, and the third stays."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True [False, False, True] True", out.stdout


def test_a_homeserver_gets_no_harness_secret_and_no_model_key() -> None:
    base = {"PATH": "/bin", "MATRIX_QA_REGISTRATION_SHARED_SECRET": "s", "MATRIX_QA_LIVE_OPENAI_KEY": "k",
            "MATRIX_QA_LIVE_ANTHROPIC_KEY": "a", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "n",
            "SYNAPSE_CACHE_FACTOR": "1", "MATRIX_QA_SYNAPSE_TEMPLATE": "{}"}
    assert processes.homeserver_env(base) == {"PATH": "/bin", "SYNAPSE_CACHE_FACTOR": "1",
                                              "MATRIX_QA_SYNAPSE_TEMPLATE": "{}"}


def test_the_wrapper_refuses_a_bad_command_line(capsys) -> None:  # type: ignore[no-untyped-def]
    assert processes._exec_with_pdeathsig(["--pdeathsig", "x", "--", "true"]) == 2
    assert processes._exec_with_pdeathsig(["--pdeathsig", "1", "true"]) == 2
    assert "usage" in capsys.readouterr().err
    assert processes.with_pdeathsig(["a", "b"])[-4:] == [str(os.getpid()), "--", "a", "b"]


PARENT = r"""
import subprocess, sys
from qa import processes
child = subprocess.Popen(processes.with_pdeathsig([sys.executable, "-c", "import time; time.sleep(60)"]))
print(child.pid, flush=True)
sys.stdin.read()  # until the test SIGKILLs us
"""


def test_a_wrapped_child_dies_with_its_parent_however_the_parent_dies() -> None:
    import signal
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    # Until the wrapper has exec'd (the setting is made before that). Not "sleep" in the command line: the wrapper's
    # own holds it as an argument, and a parent killed before the wrapper looks at it ends the wrapper by another
    # path (its parent check), which passed this test with PR_SET_PDEATHSIG broken.
    # Nor merely "qa.processes" gone from it: a wrapper that cannot run at all leaves a zombie, whose command line is
    # empty. Until the child is the wrapped command itself.
    wanted = [sys.executable, "-c", "import time; time.sleep(60)"]
    while _cmdline(child) != wanted and _running(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _cmdline(child) == wanted, _cmdline(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.01)  # the kernel's SIGKILL lands within a tick; bounded above
    alive = _running(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the wrapped child outlived its SIGKILLed parent"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (init reaps an orphan's zombie in its own time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return False


# --- what the mutation run of qa/processes.py found untested ----------------------------------------------------


def test_a_nested_spawn_keeps_the_sweep_deferred_until_the_outer_one_ends() -> None:
    with processes.spawning():
        with processes.spawning():
            assert processes._spawning == 2
        assert processes._spawning == 1
        assert processes.stop_adopted() == [], "a spawn is still in flight"
    assert processes._spawning == 0


def _stat_bytes(root: Path, pid: int, ppid: int, session: int, name: bytes = b"x") -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_bytes(b"%d (%s) S %d %d %d 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 1 1\n"
                                           % (pid, name, ppid, pid, session, pid + 5))


def test_a_process_whose_name_is_not_utf8_is_still_read(tmp_path: Path) -> None:
    """A command name is any bytes (prctl PR_SET_NAME): the table and the adoption scan read it, never fail on it."""
    me = os.getpid()
    _stat_bytes(tmp_path, 900011, me, 900011, b"\xff\xfebad")
    _stat_bytes(tmp_path, 900012, 900011, 900011, b"caf\xc3")
    assert processes.process_table(tmp_path) == {(900011, 900016): me, (900012, 900017): 900011}
    assert adopted(tmp_path) == [900011]


def test_a_process_gone_mid_scan_does_not_end_the_scan(tmp_path: Path) -> None:
    """Entries without a stat (ended between the listing and the read) are skipped, whatever order they come in."""
    me = os.getpid()
    for n in range(10):
        _stat_bytes(tmp_path, 900100 + n, me, 900100 + n)  # adopted orphans
        (tmp_path / str(900200 + n)).mkdir()  # gone: no stat to read
        (tmp_path / str(900300 + n)).mkdir()
        (tmp_path / str(900300 + n) / "stat").write_text("garbage")  # a stat that cannot be parsed
    assert sorted(processes.process_table(tmp_path)) == [(900100 + n, 900105 + n) for n in range(10)]
    assert adopted(tmp_path) == [900100 + n for n in range(10)]


def test_the_process_table_reads_the_real_proc_by_default() -> None:
    table = processes.process_table()
    me = [ident for ident in table if ident[0] == os.getpid()]
    assert len(me) == 1 and me[0][1] > 0 and table[me[0]] == os.getppid()


def test_a_mark_that_is_not_utf8_ties_nothing() -> None:
    assert processes.marked_by(b"MATRIX_QA_STATE_DIR=/s/\xff\0", {"/s/a"}) is None
    assert processes.marked_by(b"MATRIX_QA_STATE_DIR=/s/\xff\0", {"/s/\ufffd"}) == "/s/\ufffd"


def test_without_prctl_nothing_is_set(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Not Linux (no libc, or no prctl in it): every setting says it did not take."""
    import ctypes

    def no_libc(*_args: object, **_kwargs: object) -> object:
        raise OSError("no libc here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert processes.prctl(processes.PR_SET_CHILD_SUBREAPER, 1) is False
    monkeypatch.setattr(ctypes, "CDLL", lambda *_a, **_k: object())  # a libc without prctl
    assert processes.become_subreaper() is False


def test_tied_orphans_skip_one_gone_meanwhile_and_read_any_name_and_mark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An adopted orphan whose stat is gone by the time it is read is skipped, not the end of the scan; a name or
    a mark that is not UTF-8 is read; an unreadable environment leaves the record to tie it."""
    me = os.getpid()
    _stat_bytes(tmp_path, 900402, me, 900402, b"\xffname")
    (tmp_path / "900402" / "environ").write_bytes(b"A=\xff\0MATRIX_QA_STATE_DIR=/s/a\0")
    _stat_bytes(tmp_path, 900403, me, 900403)  # no environ file: tied by its record alone
    _stat_bytes(tmp_path, 900404, me, 900404)  # no environ file and no record: not ours, and no error
    monkeypatch.setattr(processes, "adopted", lambda proc: [900401, 900402, 900403, 900404])  # 900401 ended
    processes.tie("/s/a")
    processes._TIED[(900403, 900408)] = "/s/a"
    try:
        assert processes.tied_orphans(None, tmp_path) == [900402, 900403]
        assert processes.tied_orphans("/s/a", tmp_path) == [900402, 900403]
        assert processes.tied_orphans("/s/b", tmp_path) == []
    finally:
        processes.untie_all()


def test_is_subreaper_reads_what_become_subreaper_set() -> None:
    # In a child of its own: this test process must not keep other tests' orphans.
    script = "from qa import processes; print(processes.is_subreaper(), processes.become_subreaper(), " \
             "processes.is_subreaper())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.split() == ["False", "True", "True"]


def test_is_subreaper_without_prctl_is_false(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_libc(*args: object, **kwargs: object) -> None:
        raise OSError("no libc")

    monkeypatch.setattr(processes.ctypes, "CDLL", no_libc)
    assert not processes.is_subreaper()


# --- what the second mutation run of qa/processes.py found untested (its zygote helpers) ----------------------------


def _cpu_stat(root: Path, pid: int, after_name: str) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_text(f"{pid} (a) b) {after_name}\n")


def test_cpu_ticks_are_user_plus_system_time_and_none_when_the_stat_cannot_say(tmp_path: Path) -> None:
    # After the command name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    _cpu_stat(tmp_path, 1, "S 1 1 1 0 -1 0 0 0 0 0 7 5")  # the line may end at stime
    _cpu_stat(tmp_path, 2, "S 1 1 1 0 -1 0 0 0 0 0 7 5 3 4 20 0")
    _cpu_stat(tmp_path, 3, "S 1 1 1 0 -1 0 0 0 0 0 7")  # cut before stime
    _cpu_stat(tmp_path, 4, "S 1 1 1 0 -1 0 0 0 0 0 x 5")
    _cpu_stat(tmp_path, 5, "S 1 1 1 0 -1 0 0 0 0 0 7 x")
    assert processes.cpu_ticks(1, tmp_path) == 12 and processes.cpu_ticks(2, tmp_path) == 12
    assert [processes.cpu_ticks(pid, tmp_path) for pid in (3, 4, 5, 6)] == [None, None, None, None]


def test_pids_are_the_numeric_entries_of_proc_and_none_without_one(tmp_path: Path) -> None:
    for name in ("1", "22", "self", "x1", "3x"):
        (tmp_path / name).mkdir()
    assert sorted(processes.pids(tmp_path)) == ["1", "22"]
    assert processes.pids(tmp_path / "gone") == []
    assert str(os.getpid()) in processes.pids()  # by default, this machine's /proc


def test_a_long_proc_file_is_read_to_its_end(tmp_path: Path) -> None:
    environ = b"".join(b"VAR%d=%s\0" % (n, b"v" * 100) for n in range(2000))  # ~210 kB, beyond one read
    (tmp_path / "environ").write_bytes(environ)
    assert processes.read_whole(str(tmp_path / "environ")) == environ
    assert processes.read_whole(str(tmp_path / "environ")) == environ  # its descriptor was closed, not leaked


class _Os:
    """The os module as qa.processes sees it, with some calls replaced (the real module stays untouched)."""

    def __init__(self, **calls: object) -> None:
        self.__dict__.update(calls)

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


class _Clock:
    """time.monotonic and time.sleep for reap: sleeping moves the clock (each look at it too, a little), and a reap
    that sleeps far past its bound fails at once instead of hanging."""

    def __init__(self, limit_s: float) -> None:
        self.now, self.slept, self.limit_s = 0.0, 0.0, limit_s

    def monotonic(self) -> float:
        self.now += 0.0001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds
        assert self.slept <= self.limit_s, f"reap slept {self.slept:.2f}s past its bound"


def test_reap_waits_for_exactly_its_pids_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock(limit_s=10.0)
    asked: list[tuple[int, int]] = []

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        asked.append((pid, options))
        if pid == 11 and clock.now >= 0.03:  # exits after 30 ms
            return pid, 0
        if pid == 13:  # not a child of ours (or reaped elsewhere): nothing to wait for
            raise ChildProcessError(10, "No child processes")
        return 0, 0  # 12: never exits

    monkeypatch.setattr(processes, "time", clock)
    monkeypatch.setattr(processes, "os", _Os(waitpid=waitpid))
    processes.reap([11, 12, 13], 0.1)
    assert {pid for pid, _ in asked} == {11, 12, 13}, "never -1: asyncio waits for its own children by pid"
    assert {options for _, options in asked} == {os.WNOHANG}
    assert [pid for pid, _ in asked].count(13) == 1, "a pid that is no child of ours is done at once"
    reaped_at = [n for n, (pid, _) in enumerate(asked) if pid == 11][-1]
    assert all(pid != 11 for pid, _ in asked[reaped_at + 1:]), "a reaped pid is not waited for again"
    assert 0.08 <= clock.slept <= 0.11, "it polled the one that never exits until its bound, and no longer"

    clock, asked[:] = _Clock(limit_s=10.0), []
    monkeypatch.setattr(processes, "time", clock)
    processes.reap([13], 5.0)
    processes.reap([], 5.0)
    assert clock.slept == 0 and asked == [(13, os.WNOHANG)]


def test_stop_adopted_kills_a_leaders_group_then_itself_and_reaps_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL, the group first when the orphan leads one (its own helpers go with it); one that is gone or not
    ours to signal does not stop the others; every one is then reaped within REAP_TIMEOUT_S."""
    import signal

    done: list[tuple[object, ...]] = []

    def getpgid(pid: int) -> int:
        if pid == 23:
            raise ProcessLookupError(pid)
        return {21: 21, 22: 1, 24: 24}[pid]

    def kill(pid: int, sig: int) -> None:
        if pid == 24:
            raise PermissionError(pid)
        done.append(("kill", pid, sig))

    killpg = lambda pid, sig: done.append(("killpg", pid, sig))  # noqa: E731
    monkeypatch.setattr(processes, "os", _Os(getpgid=getpgid, killpg=killpg, kill=kill))
    monkeypatch.setattr(processes, "tied_orphans", lambda owner: [21, 22, 23, 24] if owner in (None, "/s/a") else [])
    monkeypatch.setattr(processes, "reap", lambda pids, timeout_s: done.append(("reap", pids, timeout_s)))
    assert processes.stop_adopted("/s/a") == [21, 22, 23, 24]
    assert done == [("killpg", 21, signal.SIGKILL), ("kill", 21, signal.SIGKILL), ("kill", 22, signal.SIGKILL),
                    ("killpg", 24, signal.SIGKILL), ("reap", [21, 22, 23, 24], processes.REAP_TIMEOUT_S)]
    done.clear()
    with processes.spawning():
        assert processes.stop_adopted() == [] and done == []  # a spawn in flight: not yet
        assert processes.stop_adopted(force=True) == [21, 22, 23, 24]  # the run's end: nothing spawns now
    assert processes.stop_adopted("/s/b") == [] and done[-1] == ("reap", [], processes.REAP_TIMEOUT_S)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_readable_waits_for_the_fd_and_leaves_no_reader_behind() -> None:
    import asyncio
    import select

    r, w = os.pipe()
    try:
        async def waited() -> bool:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, os.write, w, b"x")
            async with asyncio.timeout(10):
                await processes.readable(r)
            return loop.remove_reader(r)  # False: nothing of readable's is left on the loop

        assert asyncio.run(waited()) is False
        assert select.select([r], [], [], 0)[0] == [r], "it returned before the fd was readable"

        async def nothing_to_wait_for() -> bool:
            async with asyncio.timeout(10):
                await processes._readable(r2, lambda: True)  # never written: returns only because it need not wait
            return asyncio.get_running_loop().remove_reader(r2)

        r2, w2 = os.pipe()
        try:
            assert asyncio.run(nothing_to_wait_for()) is False
        finally:
            os.close(r2)
            os.close(w2)
    finally:
        os.close(r)
        os.close(w)


def _counting_pidfd_open(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    opened: list[int] = []
    real = os.pidfd_open

    def pidfd_open(pid: int, flags: int = 0) -> int:
        opened.append(pid)
        return real(pid, flags)

    monkeypatch.setattr(processes, "os", _Os(pidfd_open=pidfd_open))
    return opened


# The child answers 3 when the test wrote to it (the loop ran while wait_popen waited), 4 when nothing came within
# its own bound (the wait blocked the loop).
BLOCKED_OR_NOT = "import select, sys; sys.exit(3 if select.select([sys.stdin], [], [], 10)[0] else 4)"


def test_wait_popen_sleeps_on_the_pidfd_with_the_loop_free_and_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    opened = _counting_pidfd_open(monkeypatch)
    before = _open_fds()
    child = subprocess.Popen([sys.executable, "-c", BLOCKED_OR_NOT], stdin=subprocess.PIPE)
    assert child.stdin is not None

    async def waited() -> int:
        asyncio.get_running_loop().call_later(0.05, child.stdin.close)  # type: ignore[union-attr]
        async with asyncio.timeout(60):
            return await processes.wait_popen(child)

    try:
        assert asyncio.run(waited()) == 3
    finally:
        child.kill()
        child.wait()
    assert len(opened) <= 2, f"it polled: {len(opened)} pidfds opened"
    assert _open_fds() <= before, "a pidfd was left open"
    assert asyncio.run(processes.wait_popen(child)) == child.returncode  # already reaped: its code at once


def test_wait_child_sleeps_on_the_pidfd_and_returns_the_code_its_poll_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import signal

    opened = _counting_pidfd_open(monkeypatch)
    before = _open_fds()
    pid = os.posix_spawn("/bin/sleep", ["sleep", "10"], os.environ)  # not asyncio's: only our poll reaps it
    codes: list[int] = []

    def poll() -> int | None:
        if not codes:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(os.waitstatus_to_exitcode(status))
        return codes[0] if codes else None

    async def waited() -> int:
        asyncio.get_running_loop().call_later(0.05, os.kill, pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            return await processes.wait_child(pid, poll)

    try:
        assert asyncio.run(waited()) == -signal.SIGKILL
    finally:
        if not codes:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert len(opened) <= 2, f"it polled: {len(opened)} pidfds opened"
    assert _open_fds() <= before, "a pidfd was left open"


def test_wait_child_of_one_reaped_meanwhile_elsewhere_returns_the_code_kept_there() -> None:
    import asyncio

    answers: list[int | None] = [None, 7]  # another waiter's poll reaped it between our look and our pidfd_open
    gone = 2 ** 22 + 1  # above any pid_max: pidfd_open says no such process

    async def waited() -> int:
        async with asyncio.timeout(30):
            return await processes.wait_child(gone, lambda: answers.pop(0) if len(answers) > 1 else answers[0])

    assert asyncio.run(waited()) == 7


PDEATHSIG_PROBE = r"""
import ctypes, json, os, sys
signal = ctypes.c_int(0)
ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(signal), 0, 0, 0)  # PR_GET_PDEATHSIG
print(json.dumps({"argv": sys.argv, "ppid": os.getppid(), "pdeathsig": signal.value,
                  "cmdline": open("/proc/self/cmdline", "rb").read().decode().split("\0")[:-1]}))
"""


def test_the_wrapper_execs_exactly_its_command_in_place_with_pdeathsig_set(tmp_path: Path) -> None:
    """Run as a process: PR_SET_PDEATHSIG(SIGKILL), then exec of exactly the given command (in place: our child is
    the command itself), a command of one word included."""
    import json

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    (tmp_path / "probe.py").write_text(PDEATHSIG_PROBE)
    for argv in ([sys.executable, str(tmp_path / "probe.py"), "an argument"], [sys.executable]):
        done = subprocess.run(processes.with_pdeathsig(argv), input=PDEATHSIG_PROBE, capture_output=True, text=True,
                              env=env, timeout=60, check=True)
        seen = json.loads(done.stdout)
        assert seen["cmdline"] == argv and seen["ppid"] == os.getpid() and seen["pdeathsig"] == 9, seen


def test_the_wrapper_whose_parent_is_already_gone_runs_nothing() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # Parent 1 is not this test: as if the harness died before the setting took (the wrapper is re-parented).
    done = subprocess.run([sys.executable, "-m", "qa.processes", "--pdeathsig", "1", "--", sys.executable, "-c",
                           "print('ran')"], capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    bad = subprocess.run([sys.executable, "-m", "qa.processes", "--pdeathsig", "1", "-", "true"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert (bad.returncode, bad.stderr) == (2, "usage: python -m qa.processes --pdeathsig PARENT_PID -- ARGV...\n")


def test_the_wrapper_refuses_a_line_missing_its_flag_or_its_command() -> None:
    # As a process: a line the check let through would set PR_SET_PDEATHSIG in whatever ran it.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    usage = "usage: python -m qa.processes --pdeathsig PARENT_PID -- ARGV...\n"
    for args in (["--pdeathsig", "1", "--"], ["--nope", "1", "--", "true"], ["--pdeathsig"], []):
        done = subprocess.run([sys.executable, "-m", "qa.processes", *args], capture_output=True, text=True, env=env,
                              timeout=60)
        assert (done.returncode, done.stderr) == (2, usage), args
