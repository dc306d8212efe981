"""The early Synapse interpreter's contract (qa.homeserver.early_synapse, seeded_boot's --await-config), without
Synapse: the orders it is handed, a process that died before them, its exit code, and who asks for one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qa import cli, cli_run
from qa.homeserver import early_synapse
from qa.homeserver.seeded_boot import AWAIT_FLAG, TEMPLATE_ENV, orders_from


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


def test_the_orders_carry_synapses_own_arguments_its_directory_output_and_template(tmp_path: Path) -> None:
    early = _early("cat")  # echoes the one line it is handed, then ends at the end of its stdin
    argv = [sys.executable, "-m", "qa.homeserver.seeded_boot", early_synapse.APP, "-c", str(tmp_path / "hs.yaml")]
    template = {"dir": "/t/k", "key": "k", "db": "/w/homeserver.db"}
    env = {"PATH": "/bin", TEMPLATE_ENV: json.dumps(template)}
    assert early_synapse.hand_over(early, argv, env, tmp_path, tmp_path / "out.log") is early
    assert early._popen.stdout is not None
    echoed = early._popen.stdout.read()
    assert orders_from(echoed) == {"argv": ["-c", str(tmp_path / "hs.yaml")], "cwd": str(tmp_path),
                                   "stdout": str(tmp_path / "out.log"), "template": template}
    assert asyncio.run(early.wait()) == 0
    early.kill()
    assert early_synapse.hand_over(_early("cat"), argv, None, tmp_path, tmp_path / "o")


def test_one_that_died_before_its_orders_is_not_handed_them(tmp_path: Path) -> None:
    early = _early(sys.executable, "-c", "raise SystemExit(3)")
    assert asyncio.run(early.wait()) == 3 and early.returncode == 3
    assert early_synapse.hand_over(early, [early_synapse.APP], None, tmp_path, tmp_path / "o") is None


def test_wait_wakes_when_it_is_killed_and_kill_is_idempotent() -> None:
    early = _early("sleep", "60")

    async def killed_meanwhile() -> int:
        asyncio.get_running_loop().call_later(0.05, early.kill)
        async with asyncio.timeout(30):
            return await early.wait()

    assert asyncio.run(killed_meanwhile()) == -9
    early.kill()
    assert early.returncode == -9 and asyncio.run(early.wait()) == -9


def test_discard_stops_the_pending_one_and_take_hands_it_over_once(monkeypatch: pytest.MonkeyPatch) -> None:
    early = _early("sleep", "60")
    monkeypatch.setattr(early_synapse, "_pending", early)
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


def test_an_app_that_fails_to_import_writes_its_traceback_to_the_log_it_is_handed(tmp_path: Path) -> None:
    # Waiting, its output goes nowhere until the orders name the log: the import's traceback must reach that log,
    # or the run's "Synapse failed to start; see <log>" points at an empty file.
    (tmp_path / "broken_app.py").write_text("raise ImportError('no module named twisted_but_broken')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    popen = subprocess.Popen([sys.executable, "-m", "qa.homeserver.seeded_boot", "broken_app", AWAIT_FLAG],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    orders = {"argv": ["-c", "hs.yaml"], "cwd": str(tmp_path), "stdout": str(tmp_path / "out.log"), "template": None}
    popen.communicate(json.dumps(orders).encode() + b"\n", timeout=60)
    assert popen.returncode == 1
    assert "no module named twisted_but_broken" in (tmp_path / "out.log").read_text()


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
