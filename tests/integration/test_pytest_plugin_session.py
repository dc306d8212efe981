"""The pytest plugin's session as a whole, from outside: Ctrl-C in the middle of a test leaves no process and no
work dir behind and exits as pytest's "interrupted"; `pytest -x` stops at the first failing test and still writes
the report; under pytest-xdist the workers' records join into one with
`matrix-qa report --merge DIR`. Each runs a pytest of its own in a subprocess. The Ctrl-C test's session boots
its own Synapse (that it is stopped is what it checks); the others use the outer session's Synapse as a bot author
uses the one of their CI (`--matrix-qa-homeserver-url`, `shared_homeserver_pytest`)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO
from tests.integration.test_pytest_plugin import _plugin_args

pytestmark = pytest.mark.integration

READY_WAIT_S = 180.0  # the session's homeserver boot and the bot's start, under load
EXIT_WAIT_S = 120.0  # the session's bounded shutdown after the interrupt

HANGING = '''
import asyncio
import json
import os


async def test_interrupted_while_the_bot_is_up(matrix_qa):
    await matrix_qa.setup()  # the homeserver, provider and fork server are up, and the bot has started
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {token}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="{token}")
    ready = {"work": str(matrix_qa._session.work)}
    os.write(int(os.environ["MQA_READY_FD"]), (json.dumps(ready) + "\\n").encode())
    await asyncio.sleep(3600)  # a long test: the interrupt comes in here


def test_never_reached(matrix_qa):
    pass
'''


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below `root`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            found[pid] = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return found


def _end(inner: subprocess.Popen[str]) -> None:
    """A test that failed before its interrupt still lets the session clean up (its work dir holds secrets)."""
    if inner.poll() is not None:
        return
    os.killpg(inner.pid, signal.SIGINT)
    try:
        inner.communicate(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(inner.pid, signal.SIGKILL)
        inner.communicate(timeout=30)


def _wait_readable(fd: int, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    return remaining > 0 and bool(select.select([fd], [], [], remaining)[0])


def test_ctrl_c_mid_test_leaves_no_process_and_no_work_dir(tmp_path: Path) -> None:
    (tmp_path / "test_hanging.py").write_text(HANGING, encoding="utf-8")
    report = tmp_path / "report"
    read_end, write_end = os.pipe()
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", *_plugin_args(), "-o", "addopts=", "-p", "no:cacheprovider", "-p",
         "no:asyncio", "-q", "--matrix-qa-report", str(report), str(tmp_path / "test_hanging.py")],
        cwd=REPO, env={**os.environ, "MQA_READY_FD": str(write_end)}, pass_fds=(write_end,),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # its own group,
    os.close(write_end)  # as a terminal's foreground job: Ctrl-C reaches every process in it
    try:
        assert _wait_readable(read_end, time.monotonic() + READY_WAIT_S), "the test never said the bot was up"
        ready = json.loads(os.read(read_end, 65536).decode().splitlines()[0])
        tree = _descendants(inner.pid)
        # Pinned before the interrupt: a pidfd follows its process, never a later one given the same pid.
        pidfds = {pid: os.pidfd_open(pid) for pid in tree}
        # The session's components: Synapse, the fork server, and the bot forked from it (same command line).
        assert sum("synapse.app.homeserver" in c for c in tree.values()) == 1, tree
        assert sum("qa.harness.zygote" in c for c in tree.values()) >= 2, tree
        assert Path(ready["work"]).is_dir()

        os.killpg(inner.pid, signal.SIGINT)
        out, _ = inner.communicate(timeout=EXIT_WAIT_S)
    finally:
        os.close(read_end)
        _end(inner)
    assert inner.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out and "test_never_reached" not in out, out
    # Every process of the session had ended when pytest exited: each pidfd reads as ended, with no wait.
    left = {pid: tree[pid] for pid, fd in pidfds.items() if not select.select([fd], [], [], 0)[0]}
    for fd in pidfds.values():
        os.close(fd)
    assert not left, f"left running after Ctrl-C: {left}"
    assert not Path(ready["work"]).exists(), "the work dir (passwords, crypto stores) was left behind"
    summary = json.loads((report / "matrix-qa-summary.json").read_text())
    assert (summary["status"], summary["exitCode"]) == ("interrupted", 130), summary["status"]


TWO_WORKERS = '''
import pytest


@pytest.mark.parametrize("n", range(2))
async def test_answered(matrix_qa, n):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {{token}}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="{{token}}")


async def test_wrong_answer_expected(matrix_qa):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {{token}}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="not what it says", timeout="5s")
'''


def test_xdist_workers_records_merge_into_the_sessions(
        tmp_path: Path, shared_homeserver_pytest: tuple[list[str], dict[str, str]]) -> None:
    hs_flags, hs_env = shared_homeserver_pytest  # both workers' sessions on one existing server, as in CI
    (tmp_path / "test_two.py").write_text(TWO_WORKERS.format(), encoding="utf-8")
    report = tmp_path / "report"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", *_plugin_args(), "-o", "addopts=", "-p", "no:cacheprovider", "-p",
         "no:asyncio", "-q", "-n", "2", "--matrix-qa-report", str(report), *hs_flags,
         str(tmp_path / "test_two.py")],
        cwd=REPO, env={**os.environ, **hs_env}, capture_output=True, text=True, timeout=400, check=False)
    assert "2 passed" in inner.stdout and "1 failed" in inner.stdout, inner.stdout + inner.stderr
    workers = sorted(p.parent.name for p in report.glob("*/matrix-qa-summary.json"))
    assert workers == ["gw0", "gw1"]
    for worker in workers:  # each worker reports the tests it was given, not the others as "not run"
        scenarios = json.loads((report / worker / "matrix-qa-summary.json").read_text())["scenarios"]
        assert all(s["status"] != "skip" for s in scenarios), scenarios

    merged = subprocess.run([sys.executable, "-m", "qa.cli", "report", "--merge", str(report), "--output-dir",
                             str(tmp_path / "merged")], cwd=REPO, capture_output=True, text=True, timeout=60,
                            check=False)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    assert "FAIL: 2 passed, 1 failed, 0 skipped (merged from 2)" in merged.stdout
    summary = json.loads((tmp_path / "merged" / "matrix-qa-summary.json").read_text())
    assert sorted(s["id"] for s in summary["scenarios"]) == [
        "test-two-test-answered-0", "test-two-test-answered-1", "test-two-test-wrong-answer-expected"]
    assert all("ran 2 times" not in s["details"] for s in summary["scenarios"])
    assert len(summary["mergedFrom"]) == 2


FIRST_FAILS = '''
async def test_wrong_answer_expected(matrix_qa):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {token}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="not what it says", timeout="5s")


async def test_after_the_failure(matrix_qa):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {token}", id="ask")
    await matrix_qa.expect_reply(to="ask", body="{token}")
'''


def test_exitfirst_stops_at_the_first_failure_and_still_writes_the_report(
        tmp_path: Path, shared_homeserver_pytest: tuple[list[str], dict[str, str]]) -> None:
    hs_flags, hs_env = shared_homeserver_pytest
    (tmp_path / "test_first_fails.py").write_text(FIRST_FAILS, encoding="utf-8")
    report = tmp_path / "report"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", *_plugin_args(), "-o", "addopts=", "-p", "no:cacheprovider", "-p",
         "no:asyncio", "-q", "-x", "--matrix-qa-report", str(report), *hs_flags,
         str(tmp_path / "test_first_fails.py")],
        cwd=REPO, env={**os.environ, **hs_env}, capture_output=True, text=True, timeout=400, check=False)
    out = inner.stdout + inner.stderr
    assert inner.returncode == 1, out
    assert "1 failed" in inner.stdout and "passed" not in inner.stdout, out
    summary = json.loads((report / "matrix-qa-summary.json").read_text())
    assert (summary["status"], summary["exitCode"]) == ("fail", 1), summary["status"]
    by_id = {s["id"]: s for s in summary["scenarios"]}
    failed = by_id["test-first-fails-test-wrong-answer-expected"]
    assert failed["status"] == "fail" and "not what it says" in json.dumps(failed["failure"]), failed
    later = by_id.get("test-first-fails-test-after-the-failure")
    assert later is None or later["status"] != "pass", "the test -x stopped before is never recorded as a pass"
    assert (report / "matrix-qa-report.md").is_file() and (report / "junit.xml").is_file()
