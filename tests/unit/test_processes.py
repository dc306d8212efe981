"""The harness as a child subreaper (qa.processes): orphans that left a bot's session and environment come back
to it, and are found and stopped; what it started itself, or what shares its session, is spared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_spawn_in_flight_defers_the_sweep_unless_forced() -> None:
    with processes.spawning():
        assert processes._spawning == 1
    assert processes._spawning == 0


SCRIPT = r"""
import os, subprocess, sys, time
from qa import processes
assert processes.become_subreaper()
# A bot that starts a helper in its own session with nothing inherited, then exits: the helper is orphaned.
bot = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], env={}, "
    "start_new_session=True); print(p.pid)"], stdout=subprocess.PIPE, text=True, start_new_session=True)
processes.own(bot.pid)
helper = int(bot.stdout.readline())
bot.wait()
deadline = time.monotonic() + 10
while helper not in processes.adopted() and time.monotonic() < deadline:
    time.sleep(0.01)
with processes.spawning():
    assert processes.stop_adopted() == []
stopped = processes.stop_adopted()
print(helper, stopped, os.path.exists(f"/proc/{helper}"))
"""


def test_an_orphan_in_its_own_session_with_a_cleared_environment_comes_back_and_is_stopped() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    helper, rest = out.stdout.split(maxsplit=1)
    assert rest.strip() == f"[{helper}] False", out.stdout


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
    while "sleep" not in Path(f"/proc/{child}/cmdline").read_text() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the wrapper has exec'd: the setting is made before that
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
