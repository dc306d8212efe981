"""The early Synapse interpreter as a zygote (qa.homeserver.synapse_zygote, seeded_boot's --await-config), with a
stand-in app instead of Synapse: what a forked child is (the harness's child, its own session, PR_SET_PDEATHSIG, its
own reactor, its orders obeyed, its exit code), that it never runs for anyone but the harness, and that an import that
failed reaches the log. A driver process plays the harness: a subreaper, as a run is (this test process is not made
one: it would keep other tests' orphans)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qa.homeserver.seeded_boot import AWAIT_FLAG

REPO = Path(__file__).resolve().parents[2]

DRIVER = r"""
import json, os, subprocess, sys
from qa import processes
assert processes.become_subreaper()
app, orders = sys.argv[1], json.loads(sys.argv[2])
zygote = subprocess.Popen([sys.executable, "-m", "qa.homeserver.seeded_boot", app, "--await-config"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
if orders.get("parent") == "us":
    orders["parent"] = os.getpid()
zygote.stdin.write(json.dumps(orders).encode() + b"\n")
zygote.stdin.flush()
answer = json.loads(zygote.stdout.readline())
code = None
if "pid" in answer:
    _, status = os.waitpid(answer["pid"], 0)  # ours to reap: the zygote's middle process handed it to us
    code = os.waitstatus_to_exitcode(status)
zygote.stdin.close()
print(json.dumps({"answer": answer, "code": code, "zygote": zygote.wait(timeout=60)}))
"""

APP = r"""
import ctypes, json, os, sys
def main():
    from twisted.internet import reactor
    target = getattr(reactor, "_ProxiedReactor___reactor_target", None)
    libc = ctypes.CDLL(None, use_errno=True)
    signal = ctypes.c_int(0)
    libc.prctl(2, ctypes.byref(signal), 0, 0, 0)  # PR_GET_PDEATHSIG
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "ppid": os.getppid(), "leader": os.getsid(0) == os.getpid(),
                      "pdeathsig": signal.value, "reactor": type(target).__name__, "stdin": sys.stdin.read()}))
    raise SystemExit(5)
"""


def _drive(tmp_path: Path, app: str, source: str, orders: dict[str, Any]) -> dict[str, Any]:
    (tmp_path / f"{app}.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), *sys.path])}
    done = subprocess.run([sys.executable, "-c", DRIVER, app, json.dumps(orders)], env=env, capture_output=True,
                          timeout=120, check=True)
    return dict(json.loads(done.stdout))


def _orders(tmp_path: Path, parent: object) -> dict[str, Any]:
    (tmp_path / "work").mkdir()
    return {"argv": ["-c", "hs.yaml"], "cwd": str(tmp_path / "work"), "stdout": str(tmp_path / "out.log"),
            "template": None, "parent": parent}


def test_a_forked_synapse_is_the_harnesss_child_in_its_own_session_with_a_reactor_of_its_own(tmp_path: Path) -> None:
    seen = _drive(tmp_path, "fine_app", APP, _orders(tmp_path, "us"))
    assert seen["code"] == 5 and seen["zygote"] == 0  # the app's exit code, reaped by the driver; the zygote ended
    said = json.loads((tmp_path / "out.log").read_text().splitlines()[-1])
    assert said["argv"] == ["fine_app", "-c", "hs.yaml"] and said["cwd"] == str(tmp_path / "work")
    assert said["ppid"] != seen["answer"]["pid"] and said["leader"] and said["stdin"] == ""
    assert said["pdeathsig"] == 9  # SIGKILL when the harness dies
    assert said["reactor"] == "EPollReactor"  # installed after the fork, into Synapse's ProxiedReactor


def test_a_forked_synapse_never_runs_for_anyone_but_the_harness(tmp_path: Path) -> None:
    # Its parent after the middle process exits is not the pid the orders name (the harness is not a subreaper, or
    # died): it must exit before running anything, never run as nobody's child.
    seen = _drive(tmp_path, "fine_app", APP, _orders(tmp_path, 1 << 22))
    assert seen["code"] == 1 and seen["zygote"] == 0
    assert not (tmp_path / "out.log").exists()  # the app never ran: its orders were never obeyed


def test_an_app_that_fails_to_import_writes_its_traceback_to_the_log_each_synapse_is_handed(tmp_path: Path) -> None:
    # The zygote's output goes nowhere: the import's traceback must reach each forked Synapse's log, or the run's
    # "Synapse failed to start; see <log>" points at an empty file.
    seen = _drive(tmp_path, "broken_app", "raise ImportError('no module named twisted_but_broken')\n",
                  _orders(tmp_path, "us"))
    assert seen["code"] == 1
    assert "no module named twisted_but_broken" in (tmp_path / "out.log").read_text()


@pytest.mark.parametrize("orders", [{"argv": "-c x", "cwd": "/", "stdout": "/o", "parent": 1}, {"argv": [], "cwd": "/",
                                    "stdout": "/o"}, {"argv": [], "cwd": "/", "stdout": "/o", "parent": "1"}])
def test_bad_orders_are_refused_and_nothing_is_forked(tmp_path: Path, orders: dict[str, Any]) -> None:
    seen = _drive(tmp_path, "fine_app", APP, orders)
    assert "error" in seen["answer"] and seen["code"] is None and seen["zygote"] == 0


def test_the_waiting_interpreter_is_told_apart_by_its_flag() -> None:
    assert AWAIT_FLAG == "--await-config"
