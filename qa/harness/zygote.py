"""A Python bot's fork server: `python -m qa.harness.zygote FD --serve MODULE… --preload ENTRY… [--path DIR]`,
started by the harness (qa.harness.fork_server) for a bot file with a `fork_server` entry (docs/bot-file.md).

Importing a Python bot (an SDK, matrix-nio, pydantic, crypto bindings) can cost a CPU-second, paid again by every
bot process of a run. This process pays it once (`--preload`: modules imported, `module:function` entries also
called), then forks one bot per request and runs `-m MODULE` in it as a fresh interpreter would (runpy). Each bot
is still a process of its own, with its own pid and its own session (setsid, so the harness's killpg reaches it
and nothing else), killable with SIGKILL, restarted for real by forking again, and its crash touches nothing
else: after the fork it shares no state with its siblings.

Wire, over the SOCK_SEQPACKET socket the harness handed us as FD (one JSON object per message):
  harness → us   {"orders": {"cwd": "..."}} with the log's fd    first, only with --await-orders (started early)
  us → harness   {"ready": pid}                              once, after the imports
                 or {"failed": ENTRY, "error": "..."}        instead, when a preload entry failed; then we exit
  harness → us   {"id": n, "argv": [...], "env": {...}, "cwd": "..."}   with fds attached: [stdout] (stdout and
                 stderr both, stdin /dev/null) or [stdout, stdin, stderr]
  us → harness   {"id": n, "pid": p}  or  {"id": n, "error": "..."}
  us → harness   {"exit": p, "code": c}                      c as os.waitstatus_to_exitcode (−N for signal N)
End of file on the socket (the harness exited, however it died) makes us SIGKILL every bot we forked that still
runs, and exit: nothing outlives the run.

Only argv of the form [python, "-m", MODULE, ...] with MODULE one of `--serve` is served; anything else is
refused, and the harness then starts that process the ordinary way.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback
from typing import Any

from qa.harness import heap_holes
from qa.processes import PR_SET_PDEATHSIG, prctl

MAX_MESSAGE = 1 << 20  # a request is argv + env: far below this


class PreloadFailed(Exception):
    """A preload entry did not import (or its function raised): the bot file's fault, told to the harness."""

    def __init__(self, entry: str, error: BaseException) -> None:
        lines = str(error).strip().splitlines()
        # One line, bounded: the harness reads one message of at most 64 KiB and prints this in its error.
        super().__init__((f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)[:500])
        self.entry = entry


def preload(entries: list[str], directory: str | None = None) -> None:
    """Everything a bot imports, lazily included, so a forked bot imports nothing; `module:function` entries
    also call the function (a cache built once here is never built again in a forked bot). `directory`, the bot's
    working directory for the run: first on sys.path, where the bot's own `python -m` puts it, so a module beside
    the bot file is preloaded from where the bot would import it (qa.harness.preload)."""
    if directory is not None and not sys.flags.safe_path:
        sys.path[0] = directory  # ours: the server's own directory, nothing a bot would see
    for entry in entries:
        module_name, _, function = entry.partition(":")
        try:
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
        except (Exception, SystemExit) as exc:  # the entry's, whatever it raised: its traceback goes to our log
            traceback.print_exc()
            raise PreloadFailed(entry, exc) from exc


def serve(sock: socket.socket, modules: frozenset[str]) -> int:
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
                    pid = _fork(json.loads(message), fds, sock, (wake_r, wake_w), modules)
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


def _fork(request: dict[str, Any], fds: list[int], sock: socket.socket, own: tuple[int, int],
          modules: frozenset[str]) -> int:
    argv, env, cwd = request["argv"], request["env"], request["cwd"]
    if len(fds) not in (1, 3) or argv[1:2] != ["-m"] or argv[2:3] == [] or argv[2] not in modules \
            or not isinstance(env, dict):
        raise ValueError(f"only `python -m {'|'.join(sorted(modules))} …` with 1 or 3 stdio fds is served here")
    server = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    # The bot. Whatever happens from here on ends in os._exit: never back into the server's loop.
    code = 1
    try:
        os.setsid()
        _die_with(server)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):  # SIGPIPE stays ignored, as Python starts every process
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in a fresh interpreter
        sock.close()
        _close(list(own))
        _stdio(fds)
        os.chdir(cwd)
        if not sys.flags.safe_path:
            # `python -m` puts its working directory first on sys.path: ours was the server's, the bot's is its own
            # (a bot module beside its bot file, `python -m mybot` in that folder, is found as it would be).
            sys.path[0] = os.getcwd()
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [argv[0], *argv[3:]]
        # sys.stdout and sys.stderr write to fds 1 and 2, which now are the bot's, buffered as a fresh
        # interpreter's would be (nothing was written to them before the fork).
        _run_as_main(argv[2])
        code = 0
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


def _die_with(server: int) -> None:
    """The kernel SIGKILLs this bot when its fork server dies (PR_SET_PDEATHSIG). The server kills its bots itself
    when the harness's socket closes, but a server SIGKILLed first (with its harness: the early one runs under
    the same setting) cannot, and its bots ran on as orphans. A server gone before the setting took: go now."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:
        os._exit(1)


def _stdio(fds: list[int]) -> None:
    """[out] → stdout and stderr, stdin /dev/null; [out, in, err] → each its own."""
    null = os.open(os.devnull, os.O_RDONLY)
    out, inp, err = (fds[0], null, fds[0]) if len(fds) == 1 else fds
    os.dup2(inp, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    _close([fd for fd in {null, *fds} if fd > 2])


def _run_as_main(module: str) -> None:
    """`python -m module`: its code runs as `__main__`. A fresh interpreter has never imported it under its own
    name; the preload may have, so that entry goes first (else runpy warns, and the bot's log would show it)."""
    for name in (module, f"{module}.__main__"):
        loaded = sys.modules.get(name)
        if loaded is not None and not hasattr(loaded, "__path__"):
            del sys.modules[name]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


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


def hold_output() -> int:
    """Started early (`--await-orders`), we have no log yet: what the imports print is kept in memory (no file,
    nothing on disk) until the orders name the log, then written there."""
    held = os.memfd_create("zygote-output")
    os.dup2(held, 1)
    os.dup2(held, 2)
    return held


def take_orders(sock: socket.socket, held: int) -> None:
    """Wait for the orders (`{"orders": {"cwd": …}}` with the log's fd attached): the log becomes our stdout and
    stderr, with what the imports printed first, and we move to our own directory. End of file instead: the run
    never got that far, so we leave, unused and silently."""
    message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
    try:
        orders = json.loads(message).get("orders") if message else None
    except (ValueError, AttributeError):
        orders = None
    if not isinstance(orders, dict) or len(fds) != 1 or not isinstance(orders.get("cwd"), str):
        _close(fds)
        raise SystemExit(0 if not message else "bad orders")
    sys.stdout.flush()
    sys.stderr.flush()
    os.lseek(held, 0, os.SEEK_SET)
    while chunk := os.read(held, 1 << 16):
        os.write(fds[0], chunk)
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    _close([fds[0], held])
    os.chdir(orders["cwd"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa.harness.zygote",
                                     description="a Python bot's fork server (started by the matrix-qa harness)")
    parser.add_argument("fd", type=int)
    parser.add_argument("--serve", action="append", default=[], metavar="MODULE")
    parser.add_argument("--preload", action="append", default=[], metavar="MODULE[:FUNCTION]")
    parser.add_argument("--path", metavar="DIR", help="the bot's working directory: first on sys.path for the preload")
    # Started before the run knows its directories (qa.harness.early_fork_server): the log and cwd come as orders.
    parser.add_argument("--await-orders", action="store_true")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    held = hold_output() if args.await_orders else None
    failed: PreloadFailed | None = None
    try:
        preload_frozen(args.preload, args.path)
    except PreloadFailed as exc:
        failed = exc
    finally:
        if held is not None:  # a failed import's traceback, too, goes to the log it is handed
            take_orders(sock, held)
    if failed is not None:
        # Instead of `ready`: the harness names the bot file and the entry (exit 2), the traceback is in our log.
        _send(sock, {"failed": failed.entry, "error": str(failed)})
        return 1
    return serve(sock, frozenset(args.serve))


def preload_frozen(entries: list[str], directory: str | None = None) -> None:
    """The preload with the cyclic collector off: the imports make long-lived objects and next to no garbage,
    yet set off a collection every 700 allocations, ~12 % of the preload's CPU (~170 ms, beside Synapse's boot;
    issue 29). Then one collection, and the objects are frozen: never freed, so the collector never touches (and
    so copies) their pages in a forked bot. The collector is back on for the bots, as in a fresh interpreter.
    Last, the free blocks the imports left in the small-object pools and the C heap are filled
    (qa.harness.heap_holes), so a bot's new objects do not copy the shared pages around them."""
    gc.disable()
    try:
        preload(entries, directory)
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()
        heap_holes.fill_holes()
        heap_holes.fill_malloc_holes()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
