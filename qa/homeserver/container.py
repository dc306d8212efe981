"""A homeserver in a Docker container, through the `docker` SDK: what every image backend shares.

One container per instance, from an image (pulled when the engine does not have it), published on a free
port of 127.0.0.1 only. A subclass says what to run (`container_spec`, usually through `loopback_spec`) and how
to register users; this module does the rest:

* `start()` returns once `/_matrix/client/versions` answers, within `start_timeout_s`; a container that exits
  or disappears meanwhile, or never answers, is an InfraError quoting the last lines of its log;
* `restart()` stops and starts the *same* container: same address, same data (the homeserver-restart scenario);
* a container that stops on its own (a crash, `docker kill`, `docker rm -f`) while the run still uses it is
  noticed within WATCH_EVERY_S and reported through `wait_died()`, so the run ends at once naming it;
* `stop()` saves the container's log (redacted) into the artifacts, then removes the container together with
  its volumes (`remove(v=True)`), which is where the data goes. It runs on success, failure and Ctrl-C (the
  run's finally-blocks), and `remove_all_containers()` is the last resort at interpreter exit.

Every container carries the label `matrix-qa.instance=<id>`: removal goes by that label as well as by handle,
so a container whose creation was still in flight when the run was cancelled is found and removed too.
The Docker SDK is synchronous; its calls run in worker threads so the event loop keeps polling and cancelling.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qa.homeserver.base import Homeserver
from qa.homeserver.external import VERSIONS_PATH, fetch_server_info, wait_until_answering
from qa.homeserver.ports import find_free_port
from qa.homeserver.registration import redact
from qa.kernel.errors import InfraError

DEFAULT_START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10
# Docker tells a client about an exit only when asked; the status is asked this often (one cheap API call).
WATCH_EVERY_S = 1.0
LABEL = "matrix-qa.instance"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_EXCERPT_LINES = 12

DockerFactory = Callable[[], Any]


def docker_endpoint(env: Mapping[str, str] | None = None) -> str:
    """Where the Docker SDK looks for an engine: $DOCKER_HOST, else the default socket."""
    environ = os.environ if env is None else env
    return environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def no_engine_message(endpoint: str, reason: str, needed_by: str) -> str:
    return (
        f"{needed_by} needs a Docker engine, and none answered at {endpoint} "
        f"(set DOCKER_HOST to look elsewhere; the Docker SDK reported: {reason}). "
        "Without Docker, use --homeserver synapse (the default: embedded, no Docker needed) "
        "or --homeserver-url URL to test against a homeserver you already run."
    )


def connect_docker(env: Mapping[str, str] | None = None, *, timeout: int = 60, needed_by: str) -> Any:
    """A docker client whose engine answered a ping; InfraError (exit 2) with the ways on if none did.

    `timeout` bounds every API call of the client (per socket read, so a long pull that keeps streaming
    progress is fine); the run's preflight uses a short one so an unreachable DOCKER_HOST fails fast."""
    import docker
    from docker.errors import DockerException

    environ = dict(os.environ if env is None else env)
    endpoint = docker_endpoint(environ)
    try:
        client = docker.from_env(environment=environ, timeout=timeout)
        client.ping()
    except DockerException as exc:
        # The SDK's text nests the OS error a few levels deep; its last clause is the part worth reading.
        raise InfraError(no_engine_message(endpoint, short(str(exc)), needed_by)) from None
    return client


def loopback_spec(*, image: str, name: str, host_port: int, container_port: int, instance: str, kind: str,
                  environment: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `client.containers.run`. Pure, so the unit tests can check it without an engine.

    Not `auto_remove`: the log must be read after the server stopped (or crashed), and a restart must keep
    the container. `stop()` removes it explicitly instead.
    """
    return {
        "image": image,
        "name": name,
        "detach": True,
        "environment": dict(environment),
        # 0.0.0.0 inside the container is needed for the port mapping to reach it; the host side is loopback
        # only, so nothing outside this machine can register on a server with a token in a CI log's reach.
        "ports": {f"{container_port}/tcp": ("127.0.0.1", host_port)},
        "labels": {LABEL: instance, "matrix-qa": kind},
    }


# instance id → (client, lock): what remove_all_containers() has to clean up if the run could not.
_LIVE: dict[str, tuple[Any, threading.Lock]] = {}
_atexit_registered = False


def remove_all_containers() -> None:
    """Force-remove every container (and its volumes) this process created. Synchronous; idempotent."""
    for instance, (client, lock) in list(_LIVE.items()):
        _remove_by_label(client, instance, lock)
        _LIVE.pop(instance, None)


def _track(instance: str, client: Any, lock: threading.Lock) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(remove_all_containers)
        _atexit_registered = True
    _LIVE[instance] = (client, lock)


def _remove_by_label(client: Any, instance: str, lock: threading.Lock) -> None:
    # Waiting on the lock means a create still running in a worker thread finishes first, and is then removed.
    with lock, contextlib.suppress(Exception):
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}={instance}"}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)


class ContainerHomeserver(Homeserver):
    """A homeserver in one container. Subclasses set `kind`, `display` (the name in messages), `image_flag`
    (the option that chooses another image) and `version_paths`, and implement `container_spec`."""

    display: str
    image_flag: str
    version_paths: Sequence[str]

    def __init__(self, log_dir: Path, *, image: str, port: int | None, start_timeout_s: float,
                 docker_factory: DockerFactory) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.image = image
        self.port = port
        self.start_timeout_s = start_timeout_s
        self.log_path = self.log_dir / f"{self.kind}.log"
        self.version = None
        self.boot_ms = None
        self.instance = secrets.token_hex(6)
        self.container_name = f"matrix-qa-{self.kind}-{self.instance}"
        self._docker_factory = docker_factory
        self._client: Any = None
        self._container: Any = None
        self._lock = threading.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._generation = 0  # bumped whenever the container is stopped on purpose: the watch then lets go

    @abstractmethod
    def container_spec(self, host_port: int) -> dict[str, Any]:
        """`client.containers.run`'s keyword arguments for this instance (see loopback_spec)."""

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise InfraError(f"the {self.display} homeserver has no port yet; call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> list[str]:
        return []

    @property
    def running(self) -> bool:
        return self._container is not None

    async def start(self) -> None:
        if self._container is not None:
            return
        if self._client is None:
            self._client = await asyncio.to_thread(self._docker_factory)
        # A daemon thread, not the default executor: asyncio.run() waits for executor threads on exit, so a
        # Ctrl-C during a long pull would otherwise hang until the download finished.
        await _in_daemon_thread(self._ensure_image, f"{self.kind}-image-pull")
        if self.port is None:
            self.port = find_free_port()
        t0 = time.monotonic()
        self._container = await asyncio.to_thread(self._create, self.container_spec(self.port))
        await self._become_ready(t0)
        info = await fetch_server_info(self.base_url, self.version_paths)
        # The server's own answer is authoritative; the image tag is what we asked for, a fallback only.
        self.version = info[1] if info else f"{_tag(self.image)} (image tag)"
        self._start_watch()

    async def stop(self) -> None:
        self._stop_watch()
        if self._client is None:
            return
        try:
            if self._container is not None:
                await asyncio.to_thread(self._save_log)
        finally:
            self._container = None
            # By label, not just by handle: also catches a container created after a cancelled start().
            await asyncio.to_thread(_remove_by_label, self._client, self.instance, self._lock)
            _LIVE.pop(self.instance, None)

    async def restart(self) -> None:
        if self._container is None:
            await self.start()
            return
        container = self._container
        self._stop_watch()
        await asyncio.to_thread(container.stop, timeout=STOP_GRACE_S)
        t0 = time.monotonic()
        await asyncio.to_thread(container.start)
        await self._become_ready(t0)
        self._start_watch()

    # --- worker-thread helpers (blocking Docker SDK calls) --------------------------------------------------

    def _ensure_image(self) -> None:
        from docker.errors import DockerException, ImageNotFound

        try:
            self._client.images.get(self.image)
            return
        except ImageNotFound:
            pass
        except DockerException as exc:
            raise InfraError(f"Docker could not inspect the homeserver image {self.image}: {short(str(exc))}") from None
        try:
            self._client.images.pull(self.image)
        except DockerException as exc:
            raise InfraError(f"could not pull the {self.display} homeserver image {self.image} ({self.image_flag} "
                             f"chooses another): {short(str(exc))}") from None

    def _create(self, spec: dict[str, Any]) -> Any:
        from docker.errors import DockerException

        with self._lock:
            _track(self.instance, self._client, self._lock)
            try:
                return self._client.containers.run(**spec)
            except DockerException as exc:
                message = (f"could not start the {self.display} homeserver container from {self.image}: "
                           f"{short(str(exc))}")
                if "port is already allocated" in str(exc) or "address already in use" in str(exc):
                    message += f" (port {self.port} on 127.0.0.1 is already in use)"
                raise InfraError(redact(message, self.secrets)) from None

    def _status(self) -> tuple[str, int | None]:
        return _status_of(self._container)

    # --- watching a running server ---------------------------------------------------------------------------

    def _start_watch(self) -> None:
        self._stop_watch()
        self._watcher = asyncio.create_task(self._watch(self._generation, self._container), name=f"{self.kind}-watch")

    def _stop_watch(self) -> None:
        self._generation += 1
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self, generation: int, container: Any) -> None:
        """A container that stops while it is still ours (stop() and restart() let go of it first) died."""
        while generation == self._generation:
            await asyncio.sleep(WATCH_EVERY_S)
            status, code = await asyncio.to_thread(_status_of, container)
            if generation != self._generation:
                return
            if status == "gone":
                self.mark_died(f"the {self.display} container {self.container_name} disappeared (removed, or the "
                               "engine stopped answering)")
            elif status in ("exited", "dead"):
                self.mark_died(f"the {self.display} container {self.container_name} {status} with exit code {code}")
            else:
                continue
            return

    def _save_log(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            raw = self._container.logs(stdout=True, stderr=True, timestamps=True)
        except Exception as exc:
            raw = f"(could not read the container's log: {short(str(exc))})\n".encode()
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        # A server may echo its configuration at start, secrets included.
        self.log_path.write_text(redact(text, self.secrets), encoding="utf-8")

    # --- readiness -------------------------------------------------------------------------------------------

    async def _become_ready(self, t0: float) -> None:
        async def exited() -> str | None:
            status, code = await asyncio.to_thread(self._status)
            if status == "gone":
                return "the container disappeared"
            return f"the container {status} with exit code {code}" if status in ("exited", "dead") else None

        problem = await wait_until_answering(self.base_url, t0 + self.start_timeout_s, gone=exited)
        if problem is None:
            self.boot_ms = (time.monotonic() - t0) * 1000
            return
        if not problem.startswith("the container"):
            problem = f"did not answer {VERSIONS_PATH} within {self.start_timeout_s:g}s ({problem})"
        await self._give_up(f"{self.display} homeserver failed to start ({problem})")

    async def _give_up(self, headline: str) -> None:
        """Save the log, remove the container and raise an InfraError: `headline`, the log's place, its tail."""
        await asyncio.to_thread(self._save_log)
        lines = [ln for ln in self.log_path.read_text(encoding="utf-8").splitlines() if ln.strip()][-_EXCERPT_LINES:]
        message = f"{headline}; its log is saved at {self.log_path}"
        if lines:
            message += "\n  last lines:\n" + "\n".join("    " + line for line in lines)
        await self.stop()
        raise InfraError(redact(message, self.secrets))


def _status_of(container: Any) -> tuple[str, int | None]:
    try:
        container.reload()
    except Exception:
        # Removed behind our back (`docker rm -f`, a DockerException), or the engine's socket went away
        # (requests' own errors): as final as an exit.
        return "gone", None
    state = container.attrs.get("State") or {}
    return str(container.status), state.get("ExitCode")


async def _in_daemon_thread(fn: Callable[[], None], name: str) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(None)

    def work() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:
            error = exc
        # The loop may be gone by now (the run was interrupted); then nobody is waiting for the answer.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    await done


def _tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else "latest"


def short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
