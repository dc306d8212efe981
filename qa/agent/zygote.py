"""The embedded agent's fork server: `python -m qa.agent.zygote FD`, started by the harness (qa.harness.fork_server).

Importing the agent (openai, nio, pydantic, the crypto bindings) costs about a CPU-second, paid again by every
bot process of a run: seventeen times in the fast profile, nearly half of the run's CPU. This process pays it
once, then forks one bot per request. Each bot is still a process of its own, with its own pid and its own
session (setsid, so the harness's killpg reaches it and nothing else), killable with SIGKILL, restarted for real
by forking again, and its crash touches nothing else: after the fork it shares no state with its siblings.

Wire, over the SOCK_SEQPACKET socket the harness handed us as FD (one JSON object per message):
  us → harness   {"ready": pid}                              once, after the imports
  harness → us   {"id": n, "argv": [...], "env": {...}, "cwd": "..."}   with one fd attached: the bot's stdout
  us → harness   {"id": n, "pid": p}  or  {"id": n, "error": "..."}
  us → harness   {"exit": p, "code": c}                      c as os.waitstatus_to_exitcode (−N for signal N)
End of file on the socket (the harness exited, however it died) makes us SIGKILL every bot we forked that still
runs, and exit: nothing outlives the run.

Only argv of the form [python, "-m", "qa.agent", ...] is served; anything else is refused, and the harness then
starts that bot the ordinary way.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

MAX_MESSAGE = 1 << 20  # a request is argv + env: far below this


def preload() -> None:
    """Everything a bot imports, lazily included, so a forked bot imports nothing."""
    import nio
    import nio.crypto.attachments  # noqa: F401

    import qa.agent.__main__  # noqa: F401  (qa.agent.model primes the SDK's lazy parts as it is imported)
    from qa.agent.tls import shared_tls_context

    shared_tls_context()  # built once here, so no forked bot loads the CA bundle (~90 ms) again


def serve(sock: socket.socket) -> int:
    children: set[int] = set()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears it
    # A terminal's ^C goes to the harness, which stops us through the socket; our own SIGTERM means the same.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # through the finally below: the bots go with us
    _send(sock, {"ready": os.getpid()})
    try:
        while True:
            readable, _, _ = select.select([sock, wake_r], [], [])
            if wake_r in readable:
                os.read(wake_r, 4096)
                _reap(sock, children)
            if sock in readable:
                message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
                if not message:
                    return 0
                try:
                    pid = _fork(json.loads(message), fds, sock, (wake_r, wake_w))
                except (ValueError, KeyError, TypeError, OSError) as exc:
                    _close(fds)
                    _send(sock, {"id": _id(message), "error": f"{type(exc).__name__}: {exc}"})
                    continue
                _close(fds)
                children.add(pid)
                _send(sock, {"id": _id(message), "pid": pid})
                _reap(sock, children)  # a bot that died at once was reported before its SIGCHLD woke us
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def _fork(request: dict[str, Any], fds: list[int], sock: socket.socket, own: tuple[int, int]) -> int:
    argv, env, cwd = request["argv"], request["env"], request["cwd"]
    if len(fds) != 1 or argv[1:3] != ["-m", "qa.agent"] or not isinstance(env, dict):
        raise ValueError("only `python -m qa.agent …` with one stdout fd is served here")
    pid = os.fork()
    if pid:
        return pid
    # The bot. Whatever happens from here on ends in os._exit: never back into the server's loop.
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):  # SIGPIPE stays ignored, as Python starts every process
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in a fresh interpreter
        sock.close()
        _close(list(own))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        _close([null, fds[0]])
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [argv[0], *argv[3:]]
        # sys.stdout and sys.stderr write to fds 1 and 2, which now are the bot's log, buffered as a fresh
        # interpreter's would be (nothing was written to them before the fork).
        from qa.agent.__main__ import main

        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # the bot's crash is the bot's: its traceback goes to its log, as python -m would
        traceback.print_exc()
        code = 1
    finally:
        _exit_like_python(code)
    return 0  # unreachable: _exit_like_python never returns


def _exit_like_python(code: int) -> None:
    """What the interpreter does at exit, then os._exit: atexit handlers (logging's flush among them) run,
    the server's frames above us never do."""
    try:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the harness is gone; the loop sees the end of file next
        sock.sendall(json.dumps(message).encode())


def _id(message: bytes) -> Any:
    try:
        return json.loads(message).get("id")
    except (ValueError, AttributeError):
        return None


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def main() -> int:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m qa.agent.zygote FD (started by the matrix-qa harness)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(sys.argv[1]))
    preload()
    # Objects made by the imports are never freed; freezing them keeps the collector from touching (and so
    # copying) their pages in every forked bot.
    gc.collect()
    gc.freeze()
    return serve(sock)


if __name__ == "__main__":
    sys.exit(main())
