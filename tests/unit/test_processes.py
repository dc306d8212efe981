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
    while "qa.processes" in Path(f"/proc/{child}/cmdline").read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "qa.processes" not in Path(f"/proc/{child}/cmdline").read_text()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.01)  # the kernel's SIGKILL lands within a tick; bounded above
    alive = _running(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the wrapped child outlived its SIGKILLed parent"


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
    monkeypatch.setattr(processes, "adopted", lambda proc: [900401, 900402, 900403])  # 900401 ended meanwhile
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
