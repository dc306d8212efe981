"""The embedded agent's fork server (qa.harness.zygote) started before the run checks its plan, so its imports overlap
the harness's and the early Synapse's instead of being what the run waits for once Synapse is ready.

`matrix-qa run` asks for it (`start`) when its flags say the bot under test is the built-in agent and its bots are
forked (no --bot, --bot-command or --no-fork-server): only our own preload runs before the plan is checked, never a
user's bot code. The process imports what the agent's bot file preloads, with its output held in memory, in "/" (a
user's folder first on sys.path could shadow an import), with the environment a bot may inherit; until its orders come
it holds no file, port or secret. ForkServer.start adopts it (`fits`, `go`) when it was started exactly as the checked
bot file would start one (same arguments, same environment), hands it its log and directory, and from then on treats
it as its own; otherwise it is stopped and the ordinary start follows.

Whatever ends the run before that (a bad flag or file, a failed check, a signal) stops it unused (`discard`: from
cmd_run's finally, from atexit, and in the run when its bot needs no fork server), and it also ends by itself when
the harness dies (PR_SET_PDEATHSIG) or, once its imports are done, when its socket closes. One per process at most.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa import processes
from qa.harness.contract_env import inherited_env
from qa.harness.preload import preload_dir

AWAIT_FLAG = "--await-orders"  # qa.harness.zygote's
BUILTIN_BOT_FILE = Path(__file__).resolve().parents[1] / "agent" / "bot.yaml"  # as qa.harness.botfile's
REAP_TIMEOUT_S = 5.0

_pending: EarlyForkServer | None = None
_atexit_registered = False


class EarlyForkServer:
    """One zygote importing ahead of its orders; adopted, it stands in for asyncio's Process (pid, returncode,
    wait) in ForkServer."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, args: list[str],
                 env: dict[str, str]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sock = sock
        self.args = args  # the zygote's arguments after its fd and AWAIT_FLAG
        self.env = env

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """Its exit code, once it exits; wakes on its pidfd, never polls."""
        return await processes.wait_popen(self._popen)

    def fits(self, args: list[str], env: Mapping[str, str]) -> bool:
        """Is it, still running, the zygote a fork server with these arguments and environment would start?"""
        return self.returncode is None and self.args == args and self.env == dict(env)

    def go(self, cwd: Path, log_path: Path) -> bool:
        """Its orders: from now on its output goes to `log_path` (what it printed so far first) and it works in `cwd`.
        False when it can no longer take them (it died meanwhile): the caller stops it and starts one the ordinary
        way, whose log says why."""
        orders = json.dumps({"orders": {"cwd": str(cwd)}}).encode()
        try:
            with log_path.open("ab") as log:
                socket.send_fds(self.sock, [orders], [log.fileno()])
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL its process group and reap it, within a bound; its socket closed. Synchronous and idempotent."""
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(REAP_TIMEOUT_S)
        self.sock.close()
        processes.disown(self.pid)


def zygote_args(commands: list[list[str]], preload: list[str], directory: Path | None = None) -> list[str]:
    """Pure: the zygote's arguments after its fd, for these forkable `{python} -m MODULE …` commands and preload;
    `directory`: the bot's working directory for the run, where the preload looks first (qa.harness.preload)."""
    modules = sorted({argv[2] for argv in commands})
    return [*(a for m in modules for a in ("--serve", m)), *(a for entry in preload for a in ("--preload", entry)),
            *(["--path", str(directory)] if directory is not None else [])]


def builtin_args(path: Path = BUILTIN_BOT_FILE) -> list[str] | None:
    """The zygote's arguments for the built-in agent, read from its bot file raw: checking it with its model here
    would import pydantic before the start (~0.3 s). The run adopts the process only if the checked file asks for
    the same (`fits`). None when the file asks for no fork server or cannot be read."""
    import yaml

    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    fork = raw.get("fork_server") if isinstance(raw, dict) else None
    if not isinstance(fork, dict) or not isinstance(fork.get("preload", []), list):
        return None
    commands = [argv for argv in (raw.get("command"), raw.get("lock_probe"))
                if isinstance(argv, list) and len(argv) >= 3 and argv[:2] == ["{python}", "-m"]]
    cwd = raw.get("cwd")
    return zygote_args(commands, [str(entry) for entry in fork.get("preload", [])],
                       preload_dir(cwd if isinstance(cwd, str) else None, path.parent))


def command(fd: int, args: list[str]) -> list[str]:
    """Pure but for our pid: how the zygote is started early (behind the PR_SET_PDEATHSIG wrapper)."""
    return processes.with_pdeathsig([sys.executable, "-m", "qa.harness.zygote", str(fd), AWAIT_FLAG, *args])


def launch(args: list[str], env: Mapping[str, str]) -> EarlyForkServer | None:
    """A zygote with these arguments, importing ahead of its orders; None on any OSError (then there is simply
    none, and the run starts its fork server the ordinary way)."""
    inherit = inherited_env(env)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        # cwd "/": `python -m` puts its working directory first on the import path; the orders move it.
        with processes.spawning():
            popen = subprocess.Popen(command(theirs.fileno(), args), pass_fds=(theirs.fileno(),),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=inherit, start_new_session=True, cwd="/")
            processes.own(popen.pid)
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    return EarlyForkServer(popen, ours, args, inherit)


def start(env: Mapping[str, str]) -> EarlyForkServer | None:
    """The built-in agent's zygote, importing, unless one is pending or this kernel gives no pidfds (which its
    wait sleeps on). Never fails the run."""
    global _pending, _atexit_registered
    if _pending is not None:
        return _pending
    args = builtin_args() if processes.pidfds_work() else None
    if args is None:
        return None
    early = launch(args, env)
    if early is None:
        return None
    if not _atexit_registered:
        atexit.register(discard)
        _atexit_registered = True
    _pending = early
    return _pending


def take() -> EarlyForkServer | None:
    """The pending zygote, now the caller's to adopt (or to kill); None when there is none."""
    global _pending
    early, _pending = _pending, None
    return early


def discard() -> None:
    """Stop the pending zygote, unused. Synchronous, idempotent, safe at exit."""
    early = take()
    if early is not None:
        early.kill()
