"""The embedded Synapse's interpreter started before the run knows its config, so its imports overlap the harness's.

`matrix-qa run` asks for it (`start`) as soon as its flags and config file say the homeserver is the embedded
Synapse, before the harness imports its scenario machinery and checks the plan. The process imports Synapse (most
of its boot) and then waits, holding no port, file or secret, for one line on its stdin: the config it boots with
(qa.homeserver.seeded_boot, `AWAIT_FLAG`). SynapseHomeserver.start hands that line over (`go`) and from then on
treats the process as the one it spawned itself.

Whatever ends the run before that (a bad flag or file, a failed check, a signal) stops it unused (`discard`: from
cmd_run's finally, from the Synapse backend's last resort, from atexit), and it also ends by itself when its
stdin closes or (PR_SET_PDEATHSIG) the harness dies. One per process at most.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from qa import processes
from qa.homeserver.seeded_boot import AWAIT_FLAG, TEMPLATE_ENV
from qa.processes import pidfds_work

APP = "synapse.app.homeserver"
REAP_TIMEOUT_S = 5.0

_pending: EarlySynapse | None = None
_atexit_registered = False


class EarlySynapse:
    """One waiting Synapse interpreter; once it has gone, it stands in for asyncio's Process (pid, returncode,
    wait) in SynapseHomeserver."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """Its exit code, once it exits; wakes on its pidfd, never polls."""
        return await processes.wait_popen(self._popen)

    def go(self, synapse_argv: list[str], cwd: Path, stdout_path: Path, template: dict[str, str] | None) -> bool:
        """Boot with this config: its output from now on to `stdout_path`. False when it can no longer (it died
        while importing, say): the caller then starts Synapse the ordinary way, which says why in its log."""
        orders = {"argv": synapse_argv, "cwd": str(cwd), "stdout": str(stdout_path), "template": template}
        stdin = self._popen.stdin
        if self._popen.poll() is not None or stdin is None:
            return False
        try:
            stdin.write(json.dumps(orders).encode() + b"\n")
            stdin.close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL its process group and reap it, within a bound. Synchronous and idempotent."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(REAP_TIMEOUT_S)
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()
        processes.disown(self.pid)


def hand_over(early: EarlySynapse, argv: list[str], env: Mapping[str, str] | None, cwd: Path,
              stdout_path: Path) -> EarlySynapse | None:
    """`early` booting as `argv` (SynapseHomeserver's launch command) would have: the process to treat as spawned,
    or None (it is stopped then) when it can no longer boot."""
    template = env.get(TEMPLATE_ENV) if env is not None else None
    if early.go(argv[argv.index(APP) + 1:], cwd, stdout_path, json.loads(template) if template else None):
        return early
    early.kill()
    return None


def command() -> list[str]:
    """Pure but for our pid: how the waiting interpreter is started (behind the PR_SET_PDEATHSIG wrapper)."""
    return processes.with_pdeathsig([sys.executable, "-m", "qa.homeserver.seeded_boot", APP, AWAIT_FLAG])


def start(env: Mapping[str, str]) -> EarlySynapse | None:
    """Start the waiting interpreter unless one is pending or Synapse is not installed (the run's own start then
    says so). Never fails the run: on any OSError there is simply none."""
    global _pending, _atexit_registered
    if _pending is not None:
        return _pending
    # find_spec, as qa.homeserver.synapse.synapse_installed: importing that module (aiohttp) here would delay the start.
    if importlib.util.find_spec("synapse") is None or not pidfds_work():
        return None
    try:
        # cwd "/": `python -m` puts its working directory first on the import path, and the user's (a bot's repo
        # with its own yaml.py or http.py) must not shadow Synapse's imports; the orders move it to the work dir.
        with processes.spawning():
            popen = subprocess.Popen(command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=processes.homeserver_env(env),
                                     start_new_session=True, cwd="/")
            processes.own(popen.pid)
    except OSError:
        return None
    if not _atexit_registered:
        atexit.register(discard)
        _atexit_registered = True
    _pending = EarlySynapse(popen)
    return _pending


def take() -> EarlySynapse | None:
    """The pending interpreter, now the caller's to hand its config to (or to kill); None when there is none."""
    global _pending
    early, _pending = _pending, None
    return early


def discard() -> None:
    """Stop the pending interpreter, unused. Synchronous, idempotent, safe at exit."""
    early = take()
    if early is not None:
        early.kill()
