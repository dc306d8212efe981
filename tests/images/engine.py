"""A Docker engine for the tests: the one that answers, else a `dockerd` started here, else the reason why not.

    python -m tests.images.engine          # says which engine would be used, or why none can be had

`docker_engine(log_dir)` is a context manager. An engine that already answers (DOCKER_HOST, else the default
socket) is used and left running. Otherwise, when `dockerd` is installed and we are root, it starts one
(its log in `log_dir/dockerd.log`), waits a bounded time for it to answer, and stops it on the way out. In every
other case it raises Unavailable with the reason, which a test turns into its skip message.

Several test sessions may share a machine: a second `dockerd` started while another is already coming up
exits at once (its pid file is taken); the one that does answer is then used, and left to whoever started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_HOST = "unix:///var/run/docker.sock"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 5
POLL_S = 0.2


class Unavailable(Exception):
    """No engine answers and none can be started here; the message is the reason (a test's skip text)."""


@dataclass
class Engine:
    client: Any
    endpoint: str
    started_here: bool
    log_path: Path | None = None


def endpoint(env: Mapping[str, str]) -> str:
    return env.get("DOCKER_HOST") or DEFAULT_HOST


def why_not_start(env: Mapping[str, str], dockerd: str | None, euid: int) -> str | None:
    """Why a dockerd cannot be started here for the tests (None: it can). Pure."""
    where = endpoint(env)
    if where != DEFAULT_HOST:
        return f"no Docker engine answers at DOCKER_HOST={where}, and a local dockerd would not serve it"
    if dockerd is None:
        return "no Docker engine answers and dockerd is not installed (apt-get install docker.io)"
    if euid != 0:
        return "no Docker engine answers, and starting dockerd needs root"
    return None


def answering(env: Mapping[str, str] | None = None, timeout: int = PING_TIMEOUT_S) -> Any | None:
    """A docker client whose engine answered a ping, or None."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(environment=dict(os.environ if env is None else env), timeout=timeout)
        client.ping()
    except DockerException:
        return None
    # Builds import and commit hundreds of megabytes: the per-call timeout must allow for that.
    client.api.timeout = 600
    return client


@contextmanager
def docker_engine(log_dir: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> Iterator[Engine]:
    env = dict(os.environ)
    client = answering(env)
    if client is not None:
        try:
            yield Engine(client, endpoint(env), started_here=False)
        finally:
            client.close()
        return
    reason = why_not_start(env, shutil.which("dockerd"), os.geteuid())
    if reason is not None:
        raise Unavailable(reason)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "dockerd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            client = _wait_for(proc, log_path, start_timeout_s)
            try:
                yield Engine(client, DEFAULT_HOST, started_here=proc.poll() is None, log_path=log_path)
            finally:
                client.close()
        finally:
            _stop(proc)


def _wait_for(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> Any:
    """The client once the engine answers; Unavailable naming the log when dockerd dies or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = answering()
        if client is not None:
            return client
        if proc.poll() is not None:
            # Another session's dockerd may have won the race for the pid file: if it answers, use it.
            client = answering()
            if client is not None:
                return client
            raise Unavailable(f"dockerd exited with {proc.returncode} before answering; its log: {log_path}\n"
                              + _tail(log_path))
        if time.monotonic() > deadline:
            raise Unavailable(f"dockerd did not answer within {timeout_s:g}s; its log: {log_path}\n"
                              + _tail(log_path))
        time.sleep(POLL_S)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def main() -> int:
    import tempfile

    try:
        with docker_engine(Path(tempfile.mkdtemp(prefix="matrix-qa-engine-"))) as engine:
            version = engine.client.version().get("Version", "?")
            how = "started here for this check, now stopped" if engine.started_here else "already running"
            print(f"engine: Docker {version} at {engine.endpoint} ({how})")
    except Unavailable as exc:
        print(f"no engine: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
