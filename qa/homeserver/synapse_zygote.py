"""The early Synapse interpreter as a zygote: Synapse imported once, each homeserver's Synapse forked from it.

`python -m qa.homeserver.seeded_boot synapse.app.homeserver --await-config` (qa.homeserver.early_synapse starts it)
imports Synapse and then serves orders from its stdin, one JSON line each (seeded_boot.orders_from: Synapse's
arguments, working directory, output file, template request, and `parent`: the harness's pid). For each it forks a
Synapse and answers on its stdout with one line, `{"pid": N}` or `{"error": "..."}`. End of file on stdin: it exits.
Every Synapse forked from it shares the import's pages (copy on write; Pss splits them) and skips its CPU.

What must not be shared across the fork, and how it is not:
* Twisted's reactor. Synapse's imports install the default one (an EPollReactor: its epoll fd and waker pipe
  would be one kernel object in every child). Before importing, a ProxiedReactor is installed instead: Synapse's
  own stand-in for this very purpose (synapse.app.complement_fork_starter, which Complement runs); each child
  installs a fresh EPollReactor into it after the fork. Without it (an old Synapse, or a reactor installed already)
  nothing is forked: every order is refused and the harness starts Synapse the ordinary way.
* Threads, database connections, logging handlers, open files: the import makes none (checked in the tests and
  in hz29's report); the zygote itself starts none before forking.
* Randomness: `random`'s generator is re-seeded in every child by Python's own at-fork hook; `secrets` and
  SystemRandom read the kernel; the one key Synapse draws at import (its sync handler's cache digest key) is
  drawn again in the child.

Each Synapse is the harness's child, not the zygote's: a middle process forks it and exits, so the kernel hands it
to the harness, a subreaper (qa.processes). The harness then waits for it, reaps it and reads its exit code as for
any child it spawned; the zygote's own exit or death leaves it running. Before Synapse runs, the child waits until
the zygote has reaped the middle (so it is the harness's by then), checks that its parent is the harness, sets
PR_SET_PDEATHSIG (SIGKILL when the harness dies) and checks again; it leads a session of its own (setsid), so the
harness's killpg reaches it and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from qa.processes import PR_SET_PDEATHSIG, prctl

ANSWERS = 9  # our stdout, kept apart for the answers (answers_apart); closed in every forked Synapse
# What a forked Synapse does once it is the harness's child with its own output: seeds and runs the app.
Boot = Callable[[dict[str, Any]], None]


def install_proxy_reactor() -> Any | None:
    """Before Synapse is imported: Synapse's ProxiedReactor as Twisted's installed reactor, so its imports create
    none. None (and nothing will be forked) when it cannot be."""
    try:
        from synapse.app.complement_fork_proxied_reactor import ProxiedReactor
        from twisted.internet.error import ReactorAlreadyInstalledError
        from twisted.internet.main import installReactor
    except ImportError:
        return None
    proxy = ProxiedReactor()
    try:
        installReactor(proxy)
    except ReactorAlreadyInstalledError:  # SYNAPSE_ASYNC_IO_REACTOR: `import synapse` installed one already
        return None
    return proxy


def orders_from(line: bytes) -> dict[str, Any] | None:
    """Pure: the orders in one stdin line; None at end of file (the harness let go of us unused)."""
    if not line.strip():
        return None
    orders = json.loads(line)
    if not isinstance(orders, dict) or not all(isinstance(orders.get(k), str) for k in ("cwd", "stdout")) \
            or not isinstance(orders.get("argv"), list) or not all(isinstance(a, str) for a in orders["argv"]):
        raise SystemExit(f"matrix-qa: bad orders on stdin: {line[:200]!r}")
    return orders


def answers_apart() -> None:
    """Our stdout is where the harness reads the answers: from now on only they go there (fd ANSWERS), and what the
    import or anything else prints goes nowhere (a line of it would be read as a garbled answer)."""
    os.dup2(1, ANSWERS)
    nothing = os.open(os.devnull, os.O_WRONLY)
    os.dup2(nothing, 1)
    os.close(nothing)


def serve(proxy: Any | None, boot: Boot) -> int:
    """Fork one Synapse per order on stdin, answering each on stdout, until end of file."""
    while True:
        line = sys.stdin.buffer.readline()
        try:
            orders = orders_from(line)
            if orders is None:
                return 0  # the harness let go of us
            if not isinstance(orders.get("parent"), int):
                raise ValueError(f"no parent in the orders: {line[:200]!r}")
            if proxy is None:
                raise RuntimeError("Twisted's reactor could not be kept out of the import: nothing is forked")
            fork_synapse(orders, orders["parent"], proxy, boot, _answer)
        except (ValueError, OSError, RuntimeError, SystemExit) as exc:
            _answer({"error": f"{type(exc).__name__}: {exc}"})


def _answer(reply: dict[str, Any]) -> None:
    os.write(ANSWERS, json.dumps(reply).encode() + b"\n")


def fork_synapse(orders: dict[str, Any], parent: int, proxy: Any, boot: Boot,
                 answer: Callable[[dict[str, Any]], None]) -> int:
    """Fork a Synapse for these orders; its pid, by then the harness's child (see the module notes), is answered
    before the child is let go: a harness that never reads the answer (it gave up, and killed us) leaves no Synapse
    running, since the child runs only after `go`, and without us it reads the end of file instead."""
    go_r, go_w = os.pipe()
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: fork the Synapse, say its pid, go
        try:
            os.close(go_w)
            os.close(pid_r)
            child = os.fork()
            if child == 0:
                os.close(pid_w)
                os.close(ANSWERS)
                _run_child(orders, parent, go_r, proxy, boot)  # never returns
            os.write(pid_w, str(child).encode())
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(pid_w)
    try:
        said = _read_all(pid_r)
        os.waitpid(middle, 0)  # the middle has exited: its child is the harness's now
        if not said.isdigit():
            raise OSError(f"the middle process did not fork (it said {said!r})")
        answer({"pid": int(said)})
        os.write(go_w, b"go")
    finally:
        os.close(pid_r)
        os.close(go_w)
    return int(said)


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _run_child(orders: dict[str, Any], parent: int, go_r: int, proxy: Any, boot: Boot) -> None:
    """The forked Synapse, from the fork to its exit. Never returns into the zygote's loop."""
    code = 1
    try:
        os.setsid()  # its own session and process group: the harness's killpg(pid) reaches it and nothing else
        go = os.read(go_r, 2)  # the zygote reaped the middle: we are the harness's child now (empty: it died)
        os.close(go_r)
        if go != b"go":
            os._exit(1)  # the zygote died first: it never said we are the harness's
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # Checked after the setting, so a harness that dies from here on takes us with it: no harness to be the
        # child of (it is not a subreaper, or it died already), and we never run, unowned.
        if os.getppid() != parent:
            os._exit(1)
        _fresh_state(proxy)
        boot(orders)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:  # Synapse's crash is its own: the traceback goes to its log, as a fresh interpreter's would
        traceback.print_exc()
        code = 1
    finally:
        _exit_like_python(code)


def _fresh_state(proxy: Any) -> None:
    """What each child must not share with its siblings: its own reactor, its own random key."""
    sync = sys.modules.get("synapse.handlers.sync")
    if sync is not None and hasattr(sync, "LAZY_LOADED_PROFILE_FIELDS_CACHE_DIGEST_KEY"):
        sync.LAZY_LOADED_PROFILE_FIELDS_CACHE_DIGEST_KEY = os.urandom(32)
    from twisted.internet.epollreactor import EPollReactor

    proxy._install_real_reactor(EPollReactor())


def _exit_like_python(code: int) -> None:
    """What the interpreter does at exit (atexit handlers: logging's flush, Synapse's own), then os._exit: the
    zygote's frames above us never run."""
    try:
        import atexit

        atexit._run_exitfuncs()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)
