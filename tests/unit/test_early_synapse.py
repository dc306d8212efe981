"""The early Synapse interpreter's contract (qa.homeserver.early_synapse, seeded_boot's --await-config), without
Synapse: the orders it is handed, a process that died before them, its exit code, and who asks for one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from qa import cli, cli_run, processes
from qa.homeserver import early_synapse, synapse
from qa.homeserver.seeded_boot import AWAIT_FLAG, TEMPLATE_ENV, orders_from
from qa.run.lifecycle import LibraryLogs


def _early(*argv: str) -> early_synapse.EarlySynapse:
    popen = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    return early_synapse.EarlySynapse(popen)


def test_orders_are_one_json_line_and_end_of_file_means_unused() -> None:
    assert orders_from(b"") is None and orders_from(b"\n") is None
    line = json.dumps({"argv": ["-c", "/w/homeserver.yaml"], "cwd": "/w", "stdout": "/l/out", "template": None})
    assert orders_from(line.encode() + b"\n") == json.loads(line)
    for bad in ({"argv": "-c x", "cwd": "/w", "stdout": "/l"}, {"argv": ["-c", 1], "cwd": "/w", "stdout": "/l"},
                {"argv": [], "stdout": "/l"}, {"argv": [], "cwd": "/w"}, ["-c"]):
        with pytest.raises(SystemExit, match="bad orders"):
            orders_from(json.dumps(bad).encode())


def _fork(early: early_synapse.EarlySynapse, argv: list[str], env: dict[str, str] | None, cwd: Path,
          out: Path, timeout_s: float = 30) -> early_synapse.ForkedSynapse | None:
    async def fork() -> early_synapse.ForkedSynapse | None:
        return await early_synapse.fork_from(early, argv, env, cwd, out, timeout_s)
    return asyncio.run(fork())


@pytest.fixture
def subreaper(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a run (qa.run.Run.execute): a Synapse forked from the zygote comes to us. Not set for real here, so
    this test process keeps no one else's orphans."""
    monkeypatch.setattr(early_synapse.processes, "is_subreaper", lambda: True)


def test_the_orders_carry_synapses_own_arguments_its_directory_output_template_and_us(
        tmp_path: Path, subreaper: None) -> None:
    early = _early("cat")  # echoes each order: an answer without a pid, so nothing was forked
    argv = [sys.executable, "-m", "qa.homeserver.seeded_boot", early_synapse.APP, "-c", str(tmp_path / "hs.yaml")]
    template = {"dir": "/t/k", "key": "k", "db": "/w/homeserver.db"}
    env = {"PATH": "/bin", TEMPLATE_ENV: json.dumps(template)}
    seen: list[bytes] = []
    real = early._answer

    async def recorded(timeout_s: float) -> dict[str, object] | None:
        answer = await real(timeout_s)
        seen.append(json.dumps(answer).encode())
        return answer

    early._answer = recorded  # type: ignore[method-assign]
    assert _fork(early, argv, env, tmp_path, tmp_path / "out.log") is None
    assert orders_from(seen[0]) == {"argv": ["-c", str(tmp_path / "hs.yaml")], "cwd": str(tmp_path),
                                    "stdout": str(tmp_path / "out.log"), "template": template, "parent": os.getpid()}
    assert early.returncode is None  # an answer came (a refusal): it still serves the next homeserver
    assert _fork(early, argv, None, tmp_path, tmp_path / "o") is None and json.loads(seen[1])["template"] is None
    early.kill()


def test_each_order_is_answered_with_the_pid_of_a_child_of_ours(tmp_path: Path, subreaper: None) -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands in for a Synapse handed to us
    early = _early(sys.executable, "-c", f"import sys; sys.stdin.readline(); print('{{\"pid\": {child.pid}}}', "
                   "flush=True); sys.stdin.readline()")
    try:
        forked = _fork(early, [early_synapse.APP], None, tmp_path, tmp_path / "o")
        assert forked is not None and forked.pid == child.pid and forked.returncode is None
    finally:
        child.kill()
        child.wait()
        early.kill()


def test_no_fork_unless_we_are_a_subreaper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a subreaper, the forked Synapse would be init's child: nobody could reap it or read its exit code.
    monkeypatch.setattr(early_synapse.processes, "is_subreaper", lambda: False)
    early = _early("cat")
    assert _fork(early, [early_synapse.APP], None, tmp_path, tmp_path / "o") is None
    assert early._popen.stdout is not None and early.returncode is None
    early.kill()


def test_one_that_died_before_its_orders_is_not_handed_them(tmp_path: Path, subreaper: None) -> None:
    early = _early(sys.executable, "-c", "raise SystemExit(3)")
    assert asyncio.run(early.wait()) == 3 and early.returncode == 3
    assert _fork(early, [early_synapse.APP], None, tmp_path, tmp_path / "o") is None


def test_an_order_given_up_on_kills_the_zygote_and_reaps_a_synapse_it_had_forked(
        tmp_path: Path, subreaper: None) -> None:
    # The answer was written (the Synapse may run from then on) but never read: the harness gave up (a signal, the
    # boot's deadline). The zygote must fork nothing more, and that Synapse must not run on, nor stay a zombie.
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    early = _early(sys.executable, "-c", f"import sys; print('{{\"pid\": {child.pid}}}', flush=True); "
                   "sys.stdin.readline(); sys.stdin.readline()")
    assert early._popen.stdout is not None
    assert select.select([early._popen.stdout], [], [], 30)[0]  # answered, not yet read
    assert _fork(early, [early_synapse.APP], None, tmp_path, tmp_path / "o", timeout_s=0) is None
    assert early.returncode == -9
    with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie is left
        os.kill(child.pid, 0)


def test_a_forked_synapse_is_waited_for_and_reaped_as_our_child() -> None:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], os.environ)  # not asyncio's: nobody else reaps it
    forked = early_synapse.ForkedSynapse(pid)

    async def waited() -> int:
        async with asyncio.timeout(30):
            return await forked.wait()

    assert asyncio.run(waited()) == 7 and forked.returncode == 7
    with pytest.raises(ChildProcessError):  # reaped by that wait, not left a zombie
        os.waitpid(pid, os.WNOHANG)
    killed = early_synapse.ForkedSynapse(os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ))
    assert killed.returncode is None
    os.kill(killed.pid, signal.SIGKILL)
    assert asyncio.run(killed.wait()) == -signal.SIGKILL


def test_wait_wakes_when_it_is_killed_and_kill_is_idempotent() -> None:
    early = _early("sleep", "60")

    async def killed_meanwhile() -> int:
        asyncio.get_running_loop().call_later(0.05, early.kill)
        async with asyncio.timeout(30):
            return await early.wait()

    assert asyncio.run(killed_meanwhile()) == -9
    early.kill()
    assert early.returncode == -9 and asyncio.run(early.wait()) == -9


def test_the_zygote_is_let_go_once_every_homeserver_has_its_synapse() -> None:
    early = _early("cat")  # ends at the end of its stdin, as the zygote does
    early.claim()
    early.claim()
    early.release()
    assert early.returncode is None  # one homeserver still to boot
    early.release()
    assert asyncio.run(early.wait()) == 0
    early.kill()


def test_discard_stops_the_one_handed_to_the_run_too(monkeypatch: pytest.MonkeyPatch) -> None:
    early = _early("sleep", "60")
    monkeypatch.setattr(early_synapse, "_pending", early)
    monkeypatch.setattr(early_synapse, "_handed", None)
    assert early_synapse.take() is early and early_synapse.take() is None
    left = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ, setsid=True)  # a forked Synapse never reaped
    monkeypatch.setattr(early_synapse, "_forked", {left})
    early_synapse.discard()
    assert early.returncode == -9
    with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie is left
        os.kill(left, 0)
    early_synapse.discard()


def test_discard_stops_the_pending_one_and_take_hands_it_over_once(monkeypatch: pytest.MonkeyPatch) -> None:
    early = _early("sleep", "60")
    monkeypatch.setattr(early_synapse, "_pending", early)
    monkeypatch.setattr(early_synapse, "_handed", None)
    early_synapse.discard()
    assert early.returncode == -9 and early_synapse.take() is None
    early_synapse.discard()  # nothing pending: nothing to do


def test_the_waiting_interpreter_is_seeded_boot_behind_the_pdeathsig_wrapper() -> None:
    command = early_synapse.command()
    assert command[command.index("--") + 1:] == [sys.executable, "-m", "qa.homeserver.seeded_boot",
                                                 "synapse.app.homeserver", AWAIT_FLAG]
    assert "--pdeathsig" in command


@pytest.mark.parametrize(("flags", "starts"), [
    ([], True), (["--homeserver", "synapse"], True), (["--homeserver", "tuwunel"], False),
    (["--homeserver-url", "http://127.0.0.1:1"], False), (["--homeserver-image", "x"], False),
])
def test_only_a_run_on_the_embedded_synapse_starts_one_early(
        monkeypatch: pytest.MonkeyPatch, flags: list[str], starts: bool) -> None:
    started: list[object] = []
    monkeypatch.setattr(early_synapse, "start", started.append)
    cli_run._start_synapse_early(cli.build_parser().parse_args(["run", *flags]))
    assert bool(started) is starts


def test_the_fork_server_is_on_its_way_before_the_homeserver_writes_its_config() -> None:
    from qa.harness.output import Output
    from qa.run.backends import boot

    order: list[str] = []

    class Homeserver:
        kind, version, base_url, boot_ms = "fake", "1", "http://127.0.0.1:1", 1.0

        async def start(self) -> None:
            order.append("homeserver")

    async def fork_server() -> None:
        order.append("fork server")

    with open(os.devnull, "w") as devnull:
        asyncio.run(boot(Homeserver(), fork_server(), Output(devnull), []))  # type: ignore[arg-type]
    assert order == ["fork server", "homeserver"]


def test_without_pidfds_nothing_starts_early(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    assert early_synapse.pidfds_work()
    monkeypatch.setattr(os, "pidfd_open", refused)
    assert not early_synapse.pidfds_work()
    assert early_synapse.start(os.environ) is None and early_synapse.take() is None


def test_the_waiting_interpreter_does_not_start_in_the_users_directory(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    # `python -m` puts its working directory first on sys.path: a bot repo's yaml.py would shadow Synapse's yaml.
    seen: dict[str, object] = {}

    class Recorder:
        def __init__(self, argv: list[str], **kwargs: object) -> None:
            seen.update(kwargs)
            self.pid = os.getpid()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(early_synapse.subprocess, "Popen", Recorder)
    monkeypatch.setattr(early_synapse, "pidfds_work", lambda: True)
    monkeypatch.setattr(early_synapse.processes, "own", lambda pid: None)
    monkeypatch.setattr(early_synapse, "_pending", None)
    monkeypatch.setattr(early_synapse, "_atexit_registered", True)
    try:
        assert early_synapse.start({"PATH": "/bin"}) is not None
    finally:
        monkeypatch.setattr(early_synapse, "_pending", None)
    assert seen["cwd"] == "/" and seen["cwd"] != str(tmp_path)


def test_the_zygote_is_reaped_once_it_exits_after_its_last_release() -> None:
    # Nothing else waits for it until discard() at the run's end: unreaped, it stays a zombie for the whole run.
    early = _early("cat")  # ends at the end of its stdin, as the zygote does
    early.claim()

    async def released() -> None:
        early.release()
        async with asyncio.timeout(10):
            while Path(f"/proc/{early.pid}").exists():  # a zombie keeps its /proc entry until it is reaped
                await asyncio.sleep(0.01)

    try:
        asyncio.run(released())
    finally:
        early.kill()
    assert early.returncode == 0


@pytest.fixture
def said() -> Iterator[list[str]]:
    """What early_synapse logs (for the run's harness.log), whatever else has been done to the logging tree."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(early_synapse.__name__)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def test_a_zygote_that_never_answers_leaves_the_spawned_synapse_most_of_the_start_budget(
        tmp_path: Path, subreaper: None, said: list[str]) -> None:
    # It waited its whole budget before: the Synapse spawned in its stead then had ~0 s, and the failure blamed a
    # synapse.log that did not exist.
    early = _early("sleep", "60")  # its orders sit in the pipe: never an answer
    early.claim()
    hs = SimpleNamespace(workdir=tmp_path, stdout_path=tmp_path / "o", start_timeout_s=4.0)

    async def forked() -> tuple[object, float]:
        t0 = time.monotonic()
        got = await synapse._fork_early(early, hs, [early_synapse.APP], None, t0)  # type: ignore[arg-type]
        return got, t0 + hs.start_timeout_s - time.monotonic()

    got, left = asyncio.run(forked())
    assert got is None and early.returncode == -signal.SIGKILL  # given up on: it forks nothing after this
    assert left >= 1.0, left  # it waited half (2 s); the fallback keeps the rest
    assert said == ["the early Synapse interpreter did not answer within 2.0s; Synapse is started the ordinary way"]
    assert early_synapse.fork_budget(600) == early_synapse.FORK_WAIT_MAX_S and early_synapse.fork_budget(-1) == 0


def test_a_refused_order_is_said_in_the_harness_log(tmp_path: Path, subreaper: None, said: list[str]) -> None:
    refusal = {"error": "RuntimeError: Twisted's reactor could not be kept out of the import: nothing is forked"}
    early = _early(sys.executable, "-c", f"import sys; sys.stdin.readline(); print({json.dumps(refusal)!r}, "
                   "flush=True); sys.stdin.readline()")
    try:
        assert _fork(early, [early_synapse.APP], None, tmp_path, tmp_path / "o") is None
    finally:
        early.kill()
    assert said == [f"the early Synapse interpreter refused to fork Synapse: {refusal['error']}; Synapse is started "
                    "the ordinary way"]


def test_why_a_synapse_was_not_forked_reaches_the_runs_harness_log(tmp_path: Path) -> None:
    logs = LibraryLogs(tmp_path / "harness.log")
    try:
        logging.getLogger(early_synapse.__name__).warning("the early Synapse interpreter did not answer")
    finally:
        logs.close()
    assert "qa.homeserver.early_synapse: the early Synapse interpreter did not answer" \
           in (tmp_path / "harness.log").read_text()


def test_the_run_gives_its_library_loggers_back_as_it_found_them(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A process that runs again (a pytest session, an in-process caller) keeps its own log handlers: after a run,
    nio's, aiohttp's, asyncio's and our homeserver notes propagate again at the level they had."""
    before = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in LibraryLogs.NAMES}
    LibraryLogs(tmp_path / "harness.log").close()
    assert {name: (logging.getLogger(name).level, logging.getLogger(name).propagate)
            for name in LibraryLogs.NAMES} == before
    with caplog.at_level("WARNING", logger="qa.homeserver.spare"):
        logging.getLogger("qa.homeserver.spare").warning("after the run")
    assert [r.getMessage() for r in caplog.records] == ["after the run"]


def _zombie(argv: list[str]) -> int:
    """A child of ours in a session of its own that has exited and is not reaped: what the kernel hands a subreaper."""
    pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True)
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(") ")[2].split()[0] != "Z":  # bounded: it exits at once
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    return pid


def test_discard_reaps_a_synapse_the_zygote_forked_but_never_announced(monkeypatch: pytest.MonkeyPatch) -> None:
    # The zygote died between the fork and its answer: that Synapse (and the middle process) ended at once, ours to
    # reap though we never learnt its pid; a zombie of anything else is not the zygote's to reap.
    zygote = _early("sleep", "60")
    zygote.abandoned = True  # an order it never answered
    monkeypatch.setattr(early_synapse, "_pending", zygote)
    monkeypatch.setattr(early_synapse, "_handed", None)
    forked = _zombie([sys.executable, "-c", "pass"])
    other = _zombie(["/bin/sh", "-c", "exit 0"])
    try:
        early_synapse.discard()
        with pytest.raises(ChildProcessError):  # reaped: not even a zombie is left
            os.waitpid(forked, os.WNOHANG)
        assert os.waitpid(other, os.WNOHANG)[0] == other  # still ours, left for us to reap
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(forked, 0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(other, 0)


def test_discard_after_answered_orders_leaves_the_callers_zombies_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every order answered: the zygote forked nothing we do not know. A python child of the caller's (an in-process
    # run inside pytest), leading its own session, exited and not yet waited for, is the caller's exit code to read.
    monkeypatch.setattr(early_synapse, "_pending", _early("sleep", "60"))
    monkeypatch.setattr(early_synapse, "_handed", None)
    callers = _zombie([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        early_synapse.discard()
        assert os.waitpid(callers, os.WNOHANG) == (callers, 3 << 8)  # still there, with its own exit code
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(callers, 0)


def test_waiting_for_another_homeservers_order_counts_against_the_budget(tmp_path: Path, subreaper: None) -> None:
    # Two homeservers boot at once: the second's order waits for the first's answer (one at a time), and that wait
    # is part of its budget, else a slow zygote could make it wait twice its budget before it spawns its own.
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands in for the first's Synapse
    early = _early(sys.executable, "-c", f"import sys, time; sys.stdin.readline(); time.sleep(1); "
                   f"print('{{\"pid\": {child.pid}}}', flush=True); sys.stdin.readline(); time.sleep(60)")
    given: list[float] = []
    real = early._answer

    async def recorded(timeout_s: float) -> dict[str, object] | None:
        given.append(timeout_s)
        return await real(timeout_s)

    early._answer = recorded  # type: ignore[method-assign]

    async def both() -> list[object]:
        return list(await asyncio.gather(*(early_synapse.fork_from(early, [early_synapse.APP], None, tmp_path,
                                                                   tmp_path / f"o{i}", 3.0) for i in (1, 2))))

    try:
        first, second = asyncio.run(both())
        assert isinstance(first, early_synapse.ForkedSynapse) and second is None
        assert given[0] <= 3.0 and given[1] <= 2.0, given  # the first's answer took 1 s at least
    finally:
        child.kill()
        child.wait()
        early.kill()
        early_synapse._forked.discard(child.pid)


def test_a_zygote_still_importing_past_its_share_is_waited_for_not_killed(tmp_path: Path, subreaper: None,
                                                                       said: list[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded machine makes Synapse's import slow: given up on at its share (here 3 s), the zygote was killed and
    # the Synapse spawned instead imported all over again with less time. One that burns CPU is waited for.
    # The share is capped at 3 s so the start keeps 30 s: the stand-in's 4.5 s of burning (plus its own start on a
    # loaded machine) is past its share but far inside what it may take. With 6 s left (3 of 6) the margin was 1.5 s
    # for the stand-in's own start and the harness's wake-ups: the test measured 4.6-5.0 s in whole suites.
    monkeypatch.setattr(early_synapse, "FORK_WAIT_MAX_S", 3.0)
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands in for its Synapse
    early = _early(sys.executable, "-c", "import sys, time; sys.stdin.readline(); t = time.monotonic()\n"
                   "while time.monotonic() - t < 4.5: pass\n"
                   f"print('{{\"pid\": {child.pid}}}', flush=True); sys.stdin.readline(); time.sleep(60)")
    early.claim()
    hs = SimpleNamespace(workdir=tmp_path, stdout_path=tmp_path / "o", start_timeout_s=30.0)

    async def forked() -> object:
        return await synapse._fork_early(early, hs, [early_synapse.APP], None,  # type: ignore[arg-type]
                                         time.monotonic())  # 30 s left: its share is 3 s (the cap)

    try:
        got = asyncio.run(forked())
        assert isinstance(got, early_synapse.ForkedSynapse) and got.pid == child.pid, (got, said)
        assert said == []
    finally:
        child.kill()
        child.wait()
        early.kill()
        early_synapse._forked.discard(child.pid)


def test_cpu_progress_is_told_from_none() -> None:
    assert early_synapse.still_working(10, 11) and not early_synapse.still_working(10, 10)
    assert not early_synapse.still_working(None, 11) and not early_synapse.still_working(10, None)
    assert not early_synapse.still_working(11, 10)
    assert (processes.cpu_ticks(os.getpid()) or 0) > 0 and processes.cpu_ticks(2 ** 22 + 1) is None
