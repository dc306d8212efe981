"""The fork server started early (qa.harness.early_fork_server, the zygote's --await-orders), with small zygotes that
preload a module of the test's (not the agent: that costs a CPU-second): who asks for one, what it may hold before
its orders, how ForkServer adopts it or stops it, and where its output goes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from qa import cli, cli_run
from qa.harness import early_fork_server
from qa.harness.botfile import BUILTIN_BOT_FILE, BotFile, builtin_bot_file
from qa.harness.fork_server import ForkServer
from qa.harness.output import Output
from qa.kernel.errors import ConfigError
from qa.run.backends import start_fork_server
from qa.run.options import RunOptions

BOT_MAIN = "import os, sys\nprint(os.getcwd(), sys.path[0], os.environ.get('EFS_MARK'))\n"


@pytest.fixture
def small_bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BotFile:
    """A `{python} -m efs_bot` bot whose preload prints (to see where the zygote's output goes before its orders)."""
    package = tmp_path / "lib" / "efs_bot"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(BOT_MAIN)
    (package / "noisy.py").write_text("import sys\nprint('imported before the orders', file=sys.stderr)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "lib"), *sys.path[:1]]))
    return BotFile(name="efs", command=["{python}", "-m", "efs_bot"],
                   fork_server={"preload": ["efs_bot.noisy", "efs_bot.__main__"]})


def _args(bot: BotFile, preload: list[str] | None = None) -> list[str]:
    server = ForkServer(Path("/nonexistent/log"), Path("/nonexistent"), bot)
    return early_fork_server.zygote_args(server.commands, server.preload if preload is None else preload,
                                         server.preload_dir)


def test_the_built_in_agents_early_zygote_is_the_one_the_run_would_start() -> None:
    # Else the run never adopts it: it would import the agent twice.
    server = ForkServer(Path("/nonexistent/log"), Path("/nonexistent"), builtin_bot_file())
    assert early_fork_server.builtin_args() == server._args()
    assert "--path" not in server._args(), "its cwd is the scenario's state dir: installed modules only"
    assert early_fork_server.BUILTIN_BOT_FILE == BUILTIN_BOT_FILE
    assert "--preload" in (early_fork_server.builtin_args() or [])


def test_read_raw_as_the_checked_file_forks_only_its_python_m_commands(tmp_path: Path) -> None:
    from qa.harness.botfile import load_bot_file

    (tmp_path / "bot.yaml").write_text("name: x\ncommand: ['{python}', '-m', 'mybot']\n"
                                       "lock_probe: [probe, '{state_dir}']\nfork_server: {preload: [mybot]}\n")
    server = ForkServer(Path("/nonexistent/log"), Path("/nonexistent"), load_bot_file(tmp_path / "bot.yaml"))
    assert early_fork_server.builtin_args(tmp_path / "bot.yaml") == server._args() == [
        "--serve", "mybot", "--preload", "mybot", "--path", str(tmp_path.resolve())]


@pytest.mark.parametrize("text", ["name: x\ncommand: [\n", "name: x\ncommand: ['{python}', '-m', 'm']\n",
                                  "- a list\n", "fork_server: {preload: oops}\n"])
def test_a_bot_file_that_asks_for_no_fork_server_or_cannot_be_read_has_none_early(tmp_path: Path, text: str) -> None:
    (tmp_path / "bot.yaml").write_text(text)
    assert early_fork_server.builtin_args(tmp_path / "bot.yaml") is None
    assert early_fork_server.builtin_args(tmp_path / "missing.yaml") is None


@pytest.mark.parametrize(("flags", "starts"), [
    ([], True), (["--homeserver", "tuwunel"], True), (["--bot", "mine.yaml"], False),
    (["--bot-command", "python -m mybot"], False), (["--no-fork-server"], False),
])
def test_only_a_run_whose_built_in_agent_is_forked_starts_one_early(
        monkeypatch: pytest.MonkeyPatch, flags: list[str], starts: bool) -> None:
    started: list[object] = []
    monkeypatch.setattr(early_fork_server, "start", started.append)
    cli_run._start_fork_server_early(cli.build_parser().parse_args(["run", *flags]))
    assert bool(started) is starts


def test_the_early_zygote_holds_no_secret_and_not_the_users_directory(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, argv: list[str], **kwargs: Any) -> None:
            seen.update(kwargs, argv=argv)
            self.pid = os.getpid()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(early_fork_server.subprocess, "Popen", Recorder)
    monkeypatch.setattr(early_fork_server.processes, "own", lambda pid: None)
    env = {"PATH": "/bin", "OPENAI_API_KEY": "sk-live", "MATRIX_QA_REGISTRATION_TOKEN": "reg",
           "MATRIX_QA_LIVE_OPENAI_KEY": "live", "MATRIX_QA_ACCESS_TOKEN": "tok"}
    early = early_fork_server.launch(["--serve", "m"], env)
    assert early is not None
    early.sock.close()
    assert seen["env"] == {"PATH": "/bin"}, "only what a bot may inherit"
    assert seen["cwd"] == "/" and seen["stdout"] == seen["stderr"] == early_fork_server.subprocess.DEVNULL
    argv = seen["argv"]
    assert "--pdeathsig" in argv and argv[argv.index("--") + 1:argv.index("--") + 4] == [
        sys.executable, "-m", "qa.harness.zygote"]
    assert argv[-3:] == [early_fork_server.AWAIT_FLAG, "--serve", "m"]


def test_discard_stops_the_pending_one_and_take_hands_it_over_once(small_bot: BotFile,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    early = early_fork_server.launch(_args(small_bot), os.environ)
    assert early is not None
    monkeypatch.setattr(early_fork_server, "_pending", early)
    early_fork_server.discard()
    assert early.returncode == -signal.SIGKILL and early_fork_server.take() is None
    early_fork_server.discard()  # nothing pending: nothing to do
    early.kill()  # idempotent


async def test_the_fork_server_adopts_the_early_zygote_and_its_bots_are_their_own(tmp_path: Path,
                                                                                   small_bot: BotFile) -> None:
    early = early_fork_server.launch(_args(small_bot), os.environ)
    assert early is not None
    server = ForkServer(tmp_path / "out" / "fork-server.log", tmp_path / "work" / "fork-server", small_bot)
    await server.start(early=early)
    try:
        assert server.pid == early.pid
        assert os.readlink(f"/proc/{early.pid}/cwd") == str(tmp_path / "work" / "fork-server")
        # What the imports printed before the orders named the log is in the log.
        assert "imported before the orders" in (tmp_path / "out" / "fork-server.log").read_text()
        argv = [sys.executable, "-m", "efs_bot"]
        env = {**os.environ, "EFS_MARK": "forked"}
        assert server.serves(argv, env)
        bot_dir = tmp_path / "bot"
        bot_dir.mkdir()
        proc = await server.spawn(argv, env, bot_dir)
        out = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert out == f"{bot_dir} {bot_dir} forked\n"
    finally:
        await server.close()
    assert early.returncode is not None


async def test_an_early_zygote_started_otherwise_is_stopped_and_one_started_the_ordinary_way(
        tmp_path: Path, small_bot: BotFile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFS_EXTRA", "set after the early start")
    other_preload = early_fork_server.launch(_args(small_bot, preload=["efs_bot.noisy"]), os.environ)
    other_env = early_fork_server.launch(_args(small_bot), {k: v for k, v in os.environ.items() if k != "EFS_EXTRA"})
    for early in (other_preload, other_env):
        assert early is not None
        server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", small_bot)
        await server.start(early=early)
        try:
            assert early.returncode == -signal.SIGKILL and server.pid not in (None, early.pid)
        finally:
            await server.close()


async def test_a_failed_import_before_the_orders_writes_its_traceback_to_the_log_it_is_handed(
        tmp_path: Path, small_bot: BotFile) -> None:
    # Or the run's message points at an empty file. The entry is the bot file's fault: exit 2 naming it.
    bot = small_bot.model_copy(update={"fork_server": small_bot.fork_server.model_copy(  # type: ignore[union-attr]
        update={"preload": ["efs_bot.noisy", "no_such_module_efs"]})})
    early = early_fork_server.launch(_args(bot), os.environ)
    assert early is not None
    server = ForkServer(tmp_path / "fork-server.log", tmp_path / "zygote", bot)
    with pytest.raises(ConfigError) as caught:
        await server.start(early=early)
    assert "fork_server.preload: 'no_such_module_efs' failed in the fork server: ModuleNotFoundError: No module " \
           "named 'no_such_module_efs'" in str(caught.value)
    assert server.pid is None and early.returncode == 1
    log = (tmp_path / "fork-server.log").read_text()
    assert "imported before the orders" in log and "No module named 'no_such_module_efs'" in log


async def test_one_never_handed_its_orders_leaves_silently_when_its_socket_closes(small_bot: BotFile) -> None:
    early = early_fork_server.launch(_args(small_bot), os.environ)
    assert early is not None
    early.sock.close()
    async with asyncio.timeout(60):
        assert await early.wait() == 0
    early.kill()


class _Pending:
    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True


@pytest.mark.parametrize(("fork_server", "bot"), [(False, builtin_bot_file()),
                                                  (True, BotFile(name="b", command=["mybot"]))])
async def test_a_run_whose_bot_is_not_forked_stops_the_early_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  fork_server: bool, bot: BotFile) -> None:
    pending = _Pending()
    monkeypatch.setattr(early_fork_server, "_pending", pending)
    with open(os.devnull, "w") as devnull:
        server = await start_fork_server(RunOptions(fork_server=fork_server), bot, tmp_path, tmp_path, Output(devnull))
    assert server is None and pending.killed and early_fork_server.take() is None


async def test_an_early_one_taken_but_not_adopted_is_stopped_when_the_start_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ForkServer.start makes its directories before it adopts: a full disk there (or a signal) left the early
    # zygote taken from the pending slot and held by nobody.
    from qa.harness import fork_server

    pending = _Pending()
    monkeypatch.setattr(early_fork_server, "_pending", pending)

    async def failing(self: object, timeout_s: float = 1.0, early: object = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fork_server.ForkServer, "start", failing)
    with open(os.devnull, "w") as devnull, pytest.raises(OSError):
        await start_fork_server(RunOptions(), builtin_bot_file(), tmp_path, tmp_path, Output(devnull))
    assert pending.killed and early_fork_server.take() is None


@pytest.mark.parametrize(("homeserver_s", "fork_server_s", "at_least_ms"), [(0.0, 0.2, 190.0), (0.2, 0.0, 0.0)])
def test_boot_counts_the_wait_for_the_fork_server_once_the_homeserver_is_ready(
        homeserver_s: float, fork_server_s: float, at_least_ms: float) -> None:
    from qa.run.backends import boot

    ready = asyncio.Event()  # the fork server's own time counts only from the homeserver's readiness on

    class Homeserver:
        kind, version, base_url, boot_ms = "fake", "1", "http://127.0.0.1:1", 1.0

        async def start(self) -> None:
            await asyncio.sleep(homeserver_s)
            ready.set()

    async def fork_server() -> None:
        if fork_server_s:
            await ready.wait()
            await asyncio.sleep(fork_server_s)

    async def main() -> float:
        with open(os.devnull, "w") as devnull:
            return await boot(Homeserver(), fork_server(), Output(devnull), [])  # type: ignore[arg-type]

    waited = asyncio.run(main())
    assert waited >= at_least_ms
    if not fork_server_s:
        assert waited < 190.0, "the fork server was ready first: the wait is the await's own instant"


def test_boot_awaits_the_runners_imports_when_the_fork_server_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A preload entry that fails in the fork server is a ConfigError out of `await forks`: the scenario runner's
    import beside it is still awaited, never left a pending task when the run stops."""
    from qa.kernel.errors import ConfigError
    from qa.run import backends

    imported: list[str] = []
    monkeypatch.setattr(backends, "_import_runner", lambda: imported.append("runner"))

    class Homeserver:
        kind, version, base_url, boot_ms = "fake", "1", "http://127.0.0.1:1", 1.0

        async def start(self) -> None:
            pass

    async def fork_server() -> None:
        raise ConfigError("bot.yaml: fork_server.preload: 'x' failed in the fork server")

    async def main() -> list[asyncio.Task[object]]:
        with open(os.devnull, "w") as devnull, pytest.raises(ConfigError, match="failed in the fork server"):
            await backends.boot(Homeserver(), fork_server(), Output(devnull), [])  # type: ignore[arg-type]
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == [], "the runner's import task was left pending"
    assert imported == ["runner"]


def test_start_keeps_one_pending_registers_its_discard_at_exit_once_and_never_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []
    registered: list[object] = []
    fake = object()
    monkeypatch.setattr(early_fork_server, "_pending", None)
    monkeypatch.setattr(early_fork_server, "_atexit_registered", False)
    monkeypatch.setattr(early_fork_server.atexit, "register", registered.append)
    monkeypatch.setattr(early_fork_server, "launch", lambda args, env: launched.append(args) or fake)
    assert early_fork_server.start({}) is fake and early_fork_server.start({}) is fake
    assert launched == [early_fork_server.builtin_args()] and registered == [early_fork_server.discard]
    assert early_fork_server.take() is fake and early_fork_server.take() is None
    assert early_fork_server.start({}) is fake and registered == [early_fork_server.discard], "registered once"
    monkeypatch.setattr(early_fork_server, "_pending", None)
    broken: list[tuple[object, str, object]] = [  # no pidfds, no preload to do, a failed spawn
        (early_fork_server.processes, "pidfds_work", lambda: False), (early_fork_server, "builtin_args", lambda: None),
        (early_fork_server, "launch", lambda args, env: None)]
    for owner, name, answer in broken:
        with monkeypatch.context() as m:
            m.setattr(owner, name, answer)
            assert early_fork_server.start({}) is None and early_fork_server.take() is None


def test_one_that_can_no_longer_take_its_orders_says_so(small_bot: BotFile, tmp_path: Path) -> None:
    early = early_fork_server.launch(_args(small_bot), os.environ)
    assert early is not None
    early.kill()
    assert not early.go(tmp_path, tmp_path / "fork-server.log")
