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

import contextlib
import ctypes
import os
import shutil
import signal
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
def docker_engine(log_dir: Path, *, start_timeout_s: float = START_TIMEOUT_S,
                  hand_over_to: Path | None = None) -> Iterator[Engine]:
    """`hand_over_to`: a dockerd started here is not stopped on the way out but its pid written to that file, for
    whoever outlives every user of it (the controller of a pytest-xdist session, tests/conftest.py)."""
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
    proc = DetachedDockerd(log_path)
    try:
        client = _wait_for(proc, log_path, start_timeout_s)  # type: ignore[arg-type]
        try:
            yield Engine(client, DEFAULT_HOST, started_here=proc.poll() is None, log_path=log_path)
        finally:
            client.close()
    finally:
        if hand_over_to is not None and proc.pid is not None and proc.poll() is None:
            hand_over_to.write_text(str(proc.pid))
        elif proc.pid is not None:
            stop_pid(proc.pid)


PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PID_FILE = Path("/var/run/docker.pid")


class DetachedDockerd:
    """A dockerd started outside our process tree (`setsid -f`, with our child-subreaper flag off for that
    moment), so it and the containerd shims it daemonizes are never re-parented to this test process: the
    matrix-qa runs in it are child subreapers and stop every orphan they adopt, which would kill containers."""

    def __init__(self, log_path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        try:
            with log_path.open("ab") as log:
                subprocess.run(["setsid", "-f", "dockerd"], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, check=False, timeout=10)
        finally:
            if flag.value:
                libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.pid: int | None = None
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while a dockerd runs (or has not yet written its pid file), else 1."""
        if self.pid is None:
            try:
                self.pid = int(PID_FILE.read_text())
            except (OSError, ValueError):
                return None
        alive = _is_dockerd(self.pid)
        self.returncode = None if alive else 1
        return self.returncode


def _is_dockerd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def stop_pid(pid: int) -> None:
    """SIGTERM a dockerd by pid (only if that pid is still a dockerd), SIGKILL after STOP_TIMEOUT_S."""
    if not _is_dockerd(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_dockerd(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if _is_dockerd(pid):
            os.kill(pid, signal.SIGKILL)


def stop_handed_over(pid_file: Path) -> None:
    """Stop the dockerd whose pid a worker handed over, bounded."""
    try:
        pid = int(pid_file.read_text())
        pid_file.unlink()
    except (OSError, ValueError):
        return
    stop_pid(pid)


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
