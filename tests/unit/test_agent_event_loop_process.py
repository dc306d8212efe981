"""The embedded agent's loop in real processes: signals, subprocesses and timeouts alike on uvloop and asyncio's
loop; uvloop preloaded with the agent (the fork server) and not imported by the harness's env_check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qa.agent import event_loop

pytest.importorskip("uvloop")


_SIGNAL_BOT = """
import asyncio, os, signal, sys
from qa.agent import event_loop

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "print('child')",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    print(event_loop.running_loop_name(), out.decode().strip(), proc.returncode, flush=True)
    try:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(5)
    except TimeoutError:
        print("timeout", flush=True)
    print("ready", flush=True)
    await stop.wait()
    print("stopped cleanly", flush=True)
    return 0

sys.exit(event_loop.run(main()))
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_subprocesses_and_timeouts_alike_on_both_loops(loop: str, sig: signal.Signals) -> None:
    """What the bot relies on of its loop: add_signal_handler for SIGTERM/SIGINT (a clean stop, exit 0),
    create_subprocess_exec (the exec tool), asyncio.timeout. Either loop, the same behaviour."""
    env = {**os.environ, event_loop.ENV: loop}
    proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_BOT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines == [f"{loop} child 0", "timeout", "ready"]
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert rest.strip() == "stopped cleanly"
    assert proc.returncode == 0


def test_uvloop_comes_with_the_agent_preload_not_with_env_check_and_no_loop_is_made() -> None:
    """env_check (qa.agent.overrides) runs in the harness: it must not pay uvloop's import. The fork server
    preloads qa.agent.__main__ (bot.yaml): uvloop comes with it, so no forked bot imports it, and no event loop
    exists before the fork. One interpreter for both looks."""
    code = ("import asyncio, sys, qa.agent.overrides; print('uvloop' in sys.modules); import qa.agent.__main__; "
            "print('uvloop' in sys.modules, asyncio.events._get_running_loop() is None "
            "and asyncio.get_event_loop_policy()._local._loop is None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "True"]


_FIRST_CONNECTION = """
import asyncio, sys
from pathlib import Path
import aiohttp, yaml
from qa.agent import event_loop
from qa.harness.zygote import preload

preload(yaml.safe_load(Path("qa/agent/bot.yaml").read_text())["fork_server"]["preload"])
before = set(sys.modules)

async def main():
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass
    server.close()

event_loop.run(main())
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_a_forked_agents_first_connection_imports_nothing_the_preload_left_out() -> None:
    """What every bot does first (its login: an aiohttp connection on its loop) must not import a module after
    the fork: each bot would pay that import, and hold its own copy, on its login's path. Was: encodings.idna and
    stringprep (the host name's codec), in every one of a fast run's 17 bots (issue 29)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _FIRST_CONNECTION], capture_output=True, text=True, check=True,
                          cwd=root, env=env, timeout=120)
    assert done.stdout.strip() == ""
