"""The embedded agent's fork server, without a homeserver: real zygote, real forked bots, real signals.

A forked bot must be what a spawned one is to the harness: its own pid and process group, its output on the
harness's pipe, its own environment and working directory, its exit code; killed alone, restarted as a new
process; and when the fork server itself dies, its bots end saying why and the next start is the ordinary one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qa.harness.bot_process import BotUnderTest
from qa.harness.botfile import builtin_bot_file
from qa.harness.fork_server import ForkServer
from qa.harness.launch import Launch
from qa.kernel.errors import InfraError
from tests.integration.shared_fork_server import BorrowedForkServer, SessionForkServers

pytestmark = pytest.mark.integration
# SIGTERM's bound for a forked bot stuck logging in (see its use): a bot that exits on SIGTERM does so well within
# it even on a loaded machine; only a bot deaf to SIGTERM while logging in waits it out (and then fails the test).
# A clean SIGTERM stop ends the wait at once; the bound is only where SIGKILL comes (and the bug's exit code, -9, with
# it). 10 s was near what a loaded machine takes to schedule a bot's stop (test_nio_reply_bot's took > 10 s at load 14).
STOP_HUNG_LOGIN_S = 30.0
AnyServer = ForkServer | BorrowedForkServer  # a test's own, or the session's as a run borrows it


@pytest.fixture
def hanging_homeserver() -> Iterator[str]:
    """Accepts connections (the kernel does) and never answers: a bot logging in there stays alive."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.asynccontextmanager
async def own_fork_server(tmp_path: Path) -> AsyncIterator[ForkServer]:
    """A fork server of the test's own for the embedded agent, closed at the end."""
    fork_server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", builtin_bot_file())
    await fork_server.start()
    try:
        yield fork_server
    finally:
        await fork_server.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ForkServer]:
    """A fork server of the test's own: for the tests that kill it (and the closing test, which starts its own)."""
    async with own_fork_server(tmp_path) as fork_server:
        yield fork_server


@pytest.fixture
async def session_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[AnyServer]:
    """The session's fork server for the embedded agent (tests/integration/shared_fork_server.py), as a run borrows
    it, for the tests that neither stop nor kill it: what they check is the bots forked from it (own pid, group,
    cwd, environment and exit code; a launch it cannot reproduce) and its refusal, which a server of the test's own
    and the session's show alike. Each server of its own cost this file the agent's imports again (about 1.7
    CPU-seconds; the session's is most often already up for the worker's runs). MATRIX_QA_TESTS_OWN_FORK_SERVER=1:
    one of the test's own, as before the sharing."""
    if os.environ.get("MATRIX_QA_TESTS_OWN_FORK_SERVER") == "1":
        async with own_fork_server(tmp_path) as own:
            yield own
        return
    shared: SessionForkServers = request.getfixturevalue("session_fork_servers")
    bot = builtin_bot_file()
    yield BorrowedForkServer(shared, await asyncio.to_thread(shared.server_for, bot), bot)


def _bot(tmp_path: Path, name: str, homeserver: str, server: AnyServer | None, env: dict[str, str] | None = None,
         config: dict[str, object] | None = None) -> BotUnderTest:
    home = tmp_path / name
    home.mkdir()
    config_path = home / "bot.json"
    config_path.write_text(json.dumps(config if config is not None else {
        "homeserver": homeserver, "userId": "@bot:test", "stateDir": str(home / "state"), "rooms": {},
        "model": {"baseUrl": "http://127.0.0.1:9/v1", "model": "m"},
    }))
    trace = home / "trace.jsonl"
    launch_env = {**os.environ, "MATRIX_QA_TRACE_FILE": str(trace), "MATRIX_QA_PASSWORD": "pw-" + name,
                  **(env or {})}
    launch = Launch([sys.executable, "-m", "qa.agent", "--config", str(config_path)], launch_env, home, None, None)
    return BotUnderTest(builtin_bot_file(), launch, home / "bot.log", trace, home / "trace-copy.jsonl", [],
                        fork_server=server)


async def _started(bot: BotUnderTest) -> int:
    mark = await bot.start()
    record = await bot.trace.wait_for(lambda r: r.get("type") == "start", 30, "the bot's start record", mark)
    return int(record["pid"])


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


async def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """SIGKILL lands a moment after it is sent: wait for the kernel to show the process gone (or a zombie)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while _alive(pid) and loop.time() < deadline:
        await asyncio.sleep(0.02)  # polling the kernel's view of a process we are not the parent of
    return not _alive(pid)


async def test_a_forked_bot_is_its_own_process_run_in_its_own_environment(
        tmp_path: Path, session_server: AnyServer, hanging_homeserver: str) -> None:
    one = _bot(tmp_path, "one", hanging_homeserver, session_server)
    two = _bot(tmp_path, "two", hanging_homeserver, session_server)
    pid_one, pid_two = await _started(one), await _started(two)
    assert one.forked and two.forked
    # Each start record is in that bot's own trace file, which only its environment names; the pid it reports
    # is the one the harness holds.
    assert (pid_one, pid_two) == (one.pid, two.pid) and pid_one != pid_two
    assert _parent(pid_one) == session_server.pid == _parent(pid_two)
    assert os.getpgid(pid_one) == pid_one and os.getsid(pid_one) == pid_one, "a session of its own, for killpg"
    assert Path(f"/proc/{pid_one}/cwd").resolve() == (tmp_path / "one").resolve()

    assert await one.kill() == -signal.SIGKILL
    assert one.exit_description is None or "SIGKILL" in one.exit_description
    assert _alive(pid_two) and two.proc is not None and two.proc.returncode is None, "killing one spares the other"

    pid_again = await _started(one)
    assert pid_again != pid_one and one.forked, "a restart is a new process"
    # Both bots are logging in to a server that never answers: SIGTERM still ends them, cleanly (exit 0, not the
    # SIGKILL after the bound: the agent once looked at SIGTERM only once logged in, and each stop here waited out
    # its whole bound), and the trace says the stop came during the login.
    assert await two.stop(timeout_s=STOP_HUNG_LOGIN_S) == 0
    assert two.proc is not None and two.proc.returncode == 0 and await _gone(pid_two)
    assert await one.stop(timeout_s=STOP_HUNG_LOGIN_S) == 0
    records = [json.loads(line) for line in (tmp_path / "two" / "trace.jsonl").read_text().splitlines()]
    stops = [r for r in records if r.get("type") == "stop"]
    assert stops and stops[-1].get("during") == "login", stops


async def test_a_forked_bot_that_fails_says_so_in_its_log_with_its_exit_code(
        tmp_path: Path, session_server: AnyServer, hanging_homeserver: str) -> None:
    bot = _bot(tmp_path, "bad", hanging_homeserver, session_server, config={"homeserver": 1})
    await bot.start()
    assert bot.forked
    await asyncio.wait_for(bot.died.wait(), 30)
    assert bot.exit_description == "exited with code 2"
    await asyncio.wait_for(bot.log.wait_for(lambda line: "matrix-qa bot:" in line, 10, "its message"), 15)


async def test_a_launch_the_zygote_could_not_reproduce_starts_the_ordinary_way(
        tmp_path: Path, session_server: AnyServer, hanging_homeserver: str) -> None:
    bot = _bot(tmp_path, "own-python", hanging_homeserver, session_server, env={"PYTHONHASHSEED": "7"})
    pid = await _started(bot)
    assert not bot.forked and _parent(pid) == os.getpid()
    await bot.stop(timeout_s=10)


async def test_when_the_fork_server_dies_its_bots_end_saying_why_and_later_ones_start_anyway(
        tmp_path: Path, server: ForkServer, hanging_homeserver: str) -> None:
    bot = _bot(tmp_path, "orphan", hanging_homeserver, server)
    pid = await _started(bot)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    await asyncio.wait_for(bot.died.wait(), 30)
    assert bot.exit_description is not None and "fork server" in bot.exit_description, bot.exit_description
    assert not server.alive and await _gone(pid)
    after = _bot(tmp_path, "after", hanging_homeserver, server)
    pid_after = await _started(after)
    assert not after.forked and _parent(pid_after) == os.getpid()
    await after.stop(timeout_s=10)


async def test_a_forked_bot_dies_with_its_fork_server_whoever_else_is_gone(tmp_path: Path, server: ForkServer,
                                                                         hanging_homeserver: str) -> None:
    # A harness killed with SIGKILL takes its fork server with it (the early one runs under PR_SET_PDEATHSIG) and
    # nothing is left to end the bots: the kernel must. Watched synchronously, so this harness's loop (which ends a
    # dead fork server's bots itself) cannot be the one that ended it.
    bot = _bot(tmp_path, "kernel", hanging_homeserver, server)
    pid = await _started(bot)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive_now(pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the kernel's view, on purpose without yielding to the loop
    assert not _alive_now(pid), "the bot outlived its fork server"
    await asyncio.wait_for(bot.died.wait(), 30)


def _alive_now(pid: int) -> bool:
    try:
        return _alive(pid)
    except FileNotFoundError:  # gone between the two looks
        return False


async def test_closing_the_fork_server_leaves_nothing_running(tmp_path: Path, hanging_homeserver: str) -> None:
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", builtin_bot_file())
    await server.start()
    bot = _bot(tmp_path, "left", hanging_homeserver, server)
    pid = await _started(bot)
    zygote = server.pid
    assert zygote is not None
    await server.close()
    assert await _gone(zygote)
    await asyncio.wait_for(bot.died.wait(), 30)
    assert await _gone(pid), "a bot still running when its fork server stops goes with it"


async def test_the_zygote_itself_refuses_anything_but_the_agent(
        tmp_path: Path, session_server: AnyServer) -> None:
    # The zygote is asked directly (a borrow would drop the session's server on the refusal, as a run must).
    zygote = session_server.server if isinstance(session_server, BorrowedForkServer) else session_server
    asked = zygote.spawn([sys.executable, "-c", "print(1)"], dict(os.environ), tmp_path)
    with pytest.raises(InfraError, match=r"fork server refused: ValueError: only `python -m qa\.agent"):
        await (session_server.shared.acall(asked) if isinstance(session_server, BorrowedForkServer) else asked)
    assert zygote.alive, "a refused request leaves it serving"


GENERIC_BOT = '''
import os, sys
from genbot_q import warm

def main():
    line = sys.stdin.readline().strip()
    print(__name__, sys.argv[1:], warm.CACHE, os.getcwd(), os.environ.get("GENBOT"), repr(line), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    return int(sys.argv[1])

if __name__ == "__main__":
    sys.exit(main())
'''


async def test_any_python_bot_file_can_have_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only the agent: a `{python} -m MODULE` bot with a preload (a cache warmed once, in the zygote), its
    module run as `__main__`, argv, cwd, env and exit code its own; with [stdout, stdin, stderr] fds too."""
    from qa.harness.botfile import BotFile

    package = tmp_path / "genbot_q"  # a package run by -m, as the agent is: its __main__ is preloaded
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(GENERIC_BOT)
    (package / "warm.py").write_text("import os\nCACHE = []\ndef warm():\n    CACHE.append(os.getpid())\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path[:1], os.environ.get("PYTHONPATH", "")]))
    bot = BotFile(name="gen", command=["{python}", "-m", "genbot_q", "{scenario}"],
                  fork_server={"preload": ["genbot_q.warm:warm", "genbot_q.__main__"]})
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", bot)
    await server.start()
    try:
        argv = [sys.executable, "-m", "genbot_q", "3"]
        env = {**os.environ, "GENBOT": "yes"}
        assert server.serves(argv, env) and not server.serves([sys.executable, "-m", "genbot_q"], env)
        work = tmp_path / "work"
        work.mkdir()
        proc = await server.spawn(argv, env, work)
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out.splitlines()[0] == f"__main__ ['3'] [{server.pid}] {work} yes ''", out
        assert out.splitlines()[1] == "to stderr", "one fd: stdout and stderr both on it, stdin /dev/null"
        for _ in range(500):
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.01)
        assert proc.returncode == 3
        read_in, write_in = os.pipe()
        with (tmp_path / "err.log").open("wb") as err:
            proc = await server.spawn(argv, env, work, stdin_fd=read_in, stderr_fd=err.fileno())
        os.close(read_in)
        os.write(write_in, b"hello\n")
        os.close(write_in)
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out.endswith("'hello'\n") and "to stderr" not in out, out
        assert (tmp_path / "err.log").read_text() == "to stderr\n"
        assert "RuntimeWarning" not in (tmp_path / "fork-server.log").read_text()
    finally:
        await server.close()


async def test_a_bot_module_beside_its_bot_file_is_found_in_the_fork_as_python_m_finds_it(tmp_path: Path) -> None:
    """`python -m mybot` in the bot's folder imports mybot.py from there (the working directory first on sys.path):
    a fork of a zygote started elsewhere must too (the test bots in tests/bots are run so)."""
    from qa.harness.botfile import BotFile

    folder = tmp_path / "bots"
    folder.mkdir()
    (folder / "besidebot_q.py").write_text("import os, sys\nprint('beside', sys.path[0] == os.getcwd())\n")
    bot = BotFile(name="beside", command=["{python}", "-m", "besidebot_q"], fork_server={"preload": ["json"]})
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", bot)
    await server.start()
    try:
        argv = [sys.executable, "-m", "besidebot_q"]
        assert server.serves(argv, dict(os.environ))
        proc = await server.spawn(argv, dict(os.environ), folder)
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out == "beside True\n", out
    finally:
        await server.close()


async def test_a_module_beside_the_bot_file_is_preloaded_from_there_as_python_m_would_import_it(tmp_path: Path) -> None:
    """docs/bot-file.md's `preload: [..., "mybot.tls:warm_up"]`: the entry is imported in the fork server with the
    bot's working directory first on sys.path (the bot file's folder by default), so its warm-up runs once there
    and every forked bot inherits what it built."""
    from qa.harness.botfile import load_bot_file
    from qa.harness.preload import check_preload

    folder = tmp_path / "bots"
    folder.mkdir()
    (folder / "warmcache_q.py").write_text("import os\nCACHE = []\ndef warm_up():\n    CACHE.append(os.getpid())\n")
    (folder / "warmbot_q.py").write_text("import warmcache_q\nprint(warmcache_q.CACHE)\n")
    (folder / "bot.yaml").write_text('name: warm\ncommand: ["{python}", "-m", "warmbot_q"]\n'
                                     'fork_server: {preload: ["warmcache_q:warm_up", warmbot_q]}\n')
    bot = load_bot_file(folder / "bot.yaml")
    check_preload(bot)
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", bot)
    await server.start()  # main: InfraError, the zygote died on ModuleNotFoundError: No module named 'warmcache_q'
    try:
        proc = await server.spawn([sys.executable, "-m", "warmbot_q"], dict(os.environ), folder)
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out == f"[{server.pid}]\n", out  # warmed in the fork server, once; the bot ran fresh as __main__
    finally:
        await server.close()


async def test_an_entry_an_earlier_one_made_importable_is_preloaded_and_not_refused_before(tmp_path: Path) -> None:
    """The fork server imports the entries in order: mybot_v's import puts ../vendor on sys.path, where vendored_q
    is. The check before the run (first entry only) lets the pair through, and the fork server preloads both."""
    from qa.harness.botfile import load_bot_file
    from qa.harness.preload import check_preload

    (tmp_path / "bots" / "mybot_v").mkdir(parents=True)
    (tmp_path / "bots" / "mybot_v" / "__init__.py").write_text(
        "import sys\nfrom pathlib import Path\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'vendor'))\n")
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "vendored_q.py").write_text("import os\nPID = os.getpid()\n")
    (tmp_path / "bots" / "probe_v.py").write_text("import sys\nprint(sys.modules['vendored_q'].PID)\n")
    (tmp_path / "bots" / "bot.yaml").write_text('name: v\ncommand: ["{python}", "-m", "probe_v"]\n'
                                                "fork_server: {preload: [mybot_v, vendored_q]}\n")
    bot = load_bot_file(tmp_path / "bots" / "bot.yaml")
    check_preload(bot)  # before the fix: ConfigError 'vendored_q': no module 'vendored_q' in the bot's folder
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", bot)
    await server.start()
    try:
        proc = await server.spawn([sys.executable, "-m", "probe_v"], dict(os.environ), tmp_path / "bots")
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out == f"{server.pid}\n", out  # imported once, in the fork server
    finally:
        await server.close()


async def test_a_preload_entry_that_fails_in_the_fork_server_is_exit_2_naming_the_file_and_the_entry(
        tmp_path: Path) -> None:
    """What the check before the run cannot see (a submodule, a function, the import's own error): the fork server
    says which entry, and the run stops with exit 2 in one line instead of starting every bot the slow way."""
    from qa.harness.botfile import load_bot_file
    from qa.kernel.errors import ConfigError

    (tmp_path / "coldbot_q.py").write_text("def warm_up():\n    raise RuntimeError('no cache today')\n"
                                           "def shout():\n    raise RuntimeError('x' * 100_000 + '\\nmore')\n")
    for entry, error in (("coldbot_q:warm_up", "RuntimeError: no cache today"),
                         ("coldbot_q:shout", "RuntimeError: " + "x" * 486),  # one line, bounded
                         ("coldbot_q:warm", "AttributeError: module 'coldbot_q' has no attribute 'warm'"),
                         ("json.nosuch_q", "ModuleNotFoundError: No module named 'json.nosuch_q'")):
        (tmp_path / "bot.yaml").write_text(f'name: cold\ncommand: ["{{python}}", "-m", "coldbot_q"]\n'
                                           f'fork_server: {{preload: [json, "{entry}"]}}\n')
        server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", load_bot_file(tmp_path / "bot.yaml"))
        with pytest.raises(ConfigError) as caught:
            await server.start()
        assert str(caught.value) == (
            f"{tmp_path / 'bot.yaml'}: fork_server.preload: {entry!r} failed in the fork server: {error} "
            f"(traceback in {tmp_path / 'fork-server.log'}; --no-fork-server runs without it)")
        assert server._proc is not None and server._proc.returncode is not None, "the fork server is gone"
    assert (tmp_path / "fork-server.log").read_text().count("Traceback") == 4


async def test_nothing_withheld_is_in_proc_environ_of_the_fork_server_or_a_forked_bot(
        tmp_path: Path, hanging_homeserver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As an attacker on the bot's side would look: /proc/<pid>/environ (the environment the process was exec'd
    with, which clearing os.environ after a fork does not change), of the zygote and of a bot forked from it."""
    planted = {"MATRIX_QA_LIVE_OPENAI_KEY": "sk-live-planted-0123456789abcdef",
               "MATRIX_QA_LIVE_ANTHROPIC_KEY": "sk-ant-planted-0123456789abcdef",
               "MATRIX_QA_REGISTRATION_SHARED_SECRET": "reg-planted-0123456789abcdef",
               "OPENAI_API_KEY": "sk-user-own-planted-0123456789"}  # record mode keeps this from the bot
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", builtin_bot_file())
    await server.start()
    try:
        bot = _bot(tmp_path, "spy", hanging_homeserver, server)
        bot.launch.env = {k: v for k, v in bot.launch.env.items() if k not in planted}  # as build_launch does
        pid = await _started(bot)
        assert bot.forked and server.pid is not None
        for seen in (server.pid, pid):
            environ = Path(f"/proc/{seen}/environ").read_bytes()
            for name, value in planted.items():
                assert value.encode() not in environ and name.encode() + b"=" not in environ, (seen, name)
        await bot.stop(timeout_s=10)
    finally:
        await server.close()
