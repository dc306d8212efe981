"""Synapse as a child process: the embedded default homeserver.

Each instance owns a work directory (config, SQLite database, signing key, media) and a log directory
(`synapse.log` from Synapse's logging, `synapse.stdout.log` for whatever it prints before logging is up,
which is where configuration errors land).

Cleanup guarantees, from most to least graceful:

* `async with SynapseHomeserver(...) as hs:` stops the server on exit, including on Ctrl-C (asyncio turns
  KeyboardInterrupt into cancellation, and `__aexit__` still runs).
* Every live child is also recorded in a module-level table, and `kill_all_children()` SIGKILLs them all.
  It is registered with `atexit` when the first child is spawned. Synapse runs in its own session (so a
  terminal's Ctrl-C does not hit it mid-shutdown), which also means nothing else will kill it for us:
  a harness that installs its own SIGTERM/SIGINT handlers should call `kill_all_children()` from them,
  because the default SIGTERM action ends Python without running `atexit`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml

from qa import processes
from qa.homeserver import db_template, early_synapse
from qa.homeserver.appservice_host import AppserviceHost
from qa.homeserver.base import Homeserver, UserCredentials
from qa.homeserver.db_template import installed_synapse_key
from qa.homeserver.ports import find_free_port
from qa.homeserver.registration import mint_token, redact, register_with_shared_secret
from qa.homeserver.seeded_boot import TEMPLATE_ENV
from qa.homeserver.synapse_config import (
    DEFAULT_SERVER_NAME,
    NOT_INSTALLED,
    build_log_config,
    build_synapse_config,
    write_signing_key,
)
from qa.kernel.errors import InfraError

DEFAULT_START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# Readiness poll: a refused connect costs the harness well under a millisecond, and every tick of slack here
# is added to each boot and each restart_homeserver step.
POLL_INTERVAL_S = 0.01
REGISTRATION_TIMEOUT = aiohttp.ClientTimeout(total=30)
VERSIONS_PATH = "/_matrix/client/versions"

_SECRET_KEYS = ("registration_shared_secret", "macaroon_secret_key", "form_secret")
# For failure messages: which log lines are worth quoting, and how many.
_SEVERE = re.compile(r" - (WARNING|ERROR|CRITICAL) - ")
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
_EXCERPT_LINES = 12

def port_is_free(port: int) -> bool:
    """Whether Synapse could listen on 127.0.0.1:port right now.

    SO_REUSEADDR mirrors what Twisted does, so a port whose last connections sit in TIME_WAIT (our own
    previous run, just before a restart) counts as free, while one that something is listening on does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


# Process-group ids of Synapse children that are running, so that a last-resort cleanup can find them.
_LIVE_CHILDREN: set[int] = set()
_atexit_registered = False


def kill_all_children() -> None:
    """SIGKILL every Synapse child still running. Synchronous and signal-handler safe; idempotent."""
    for pgid in list(_LIVE_CHILDREN):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_CHILDREN.discard(pgid)


def _track(pgid: int) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(kill_all_children)
        _atexit_registered = True
    _LIVE_CHILDREN.add(pgid)


def synapse_installed() -> bool:
    # find_spec rather than import: importing Synapse here would cost the harness most of a second.
    return importlib.util.find_spec("synapse") is not None


class SynapseHomeserver(Homeserver):
    kind = "synapse"
    registered_by = "shared-secret registration (/_synapse/admin/v1/register)"

    def __init__(
        self,
        workdir: Path,
        log_dir: Path,
        *,
        server_name: str = DEFAULT_SERVER_NAME,
        port: int | None = None,
        extra_config: Mapping[str, Any] | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        template_dir: Path | Literal["default"] | None = "default",
        appservice: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.log_dir = Path(log_dir).resolve()
        self.server_name = server_name
        self.port = port
        self.extra_config = dict(extra_config or {})
        self.start_timeout_s = start_timeout_s
        # Where pristine database templates are kept (None: never use one, every boot creates the schema).
        self.template_dir = db_template.cache_root() if template_dir == "default" else template_dir
        # Why this server's database did not come from a template (None: it did, or it was never fresh).
        self.template_note: str | None = None
        self._template_key: str | None = None
        self.log_path = self.log_dir / "synapse.log"
        self.stdout_path = self.log_dir / "synapse.stdout.log"
        self.config_path = self.workdir / "homeserver.yaml"
        self.version = None
        self.boot_ms = None
        self._config: dict[str, Any] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._early: early_synapse.EarlySynapse | None = None  # adopt_early
        self._watcher: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._admin: UserCredentials | None = None  # who mints registration tokens
        self.mints_registration_tokens = True
        # Application-service bots (issue 33): one registration, loaded at boot, the harness as its service URL.
        self.appservice: AppserviceHost | None = None
        self._hosts_appservice = appservice

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise InfraError("Synapse has no port yet; call start() first")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def secrets(self) -> list[str]:
        """Everything in our generated config that must never reach an artifact or a log line."""
        minted = [self._admin.access_token or "", self._admin.password] if self._admin is not None else []
        hosted = self.appservice.secrets if self.appservice is not None else []
        return ([str(self._config[k]) for k in _SECRET_KEYS] if self._config else []) + minted + hosted

    @property
    def shared_secret(self) -> str:
        if self._config is None:
            raise InfraError("Synapse has not been configured yet; call start() first")
        return str(self._config["registration_shared_secret"])

    async def start(self) -> None:
        if self._proc is not None:
            return
        if not synapse_installed():
            raise InfraError(NOT_INSTALLED)
        self._prepare()
        assert self.port is not None
        if not port_is_free(self.port):
            raise InfraError(
                f"Synapse cannot start: port {self.port} on 127.0.0.1 is already in use by another process "
                f"(Synapse was not launched; its log would be {self.log_path})"
            )

        stdout_offset = _size(self.stdout_path)
        log_offset = _size(self.log_path)
        t0 = time.monotonic()
        if self.appservice is not None:
            self.appservice.homeserver_boots()
            await self.appservice.listen()  # Synapse pushes from its first moment
        argv, env = self._launch_command()
        early, self._early = self._early, None  # the first start's Synapse is forked from the early interpreter
        proc: Any = await _fork_early(early, self, argv, env, t0) if early is not None else None
        with self.stdout_path.open("ab") as out, processes.spawning():
            proc = proc or await asyncio.create_subprocess_exec(
                # Through the wrapper: a SIGKILLed harness takes Synapse with it (PR_SET_PDEATHSIG).
                *processes.with_pdeathsig(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.workdir,
                env=processes.homeserver_env(os.environ if env is None else env),
                # Own process group: stop() can signal Synapse and anything it forks in one go, and a
                # terminal Ctrl-C reaches us first rather than killing Synapse under our feet.
                start_new_session=True,
            )
            processes.own(proc.pid)
        self._proc = proc
        _track(proc.pid)
        try:
            problem = await wait_ready(self.base_url, proc, t0 + self.start_timeout_s, self.start_timeout_s)
        except BaseException:
            await self.stop()
            raise
        if problem is not None:
            await self.stop()
            raise _start_failure(self, problem, stdout_offset, log_offset)
        self.boot_ms = (time.monotonic() - t0) * 1000
        self.version = await fetch_version(self._admin_http(), self.base_url)
        self._watcher = asyncio.create_task(self._watch(proc), name="synapse-watch")

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """A Synapse that exits while it is still ours (stop() lets go of it first) died on its own."""
        code = await proc.wait()
        if self._proc is proc:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.mark_died(f"Synapse (pid {proc.pid}) {how}")

    async def stop(self) -> None:
        await self._stop_server()
        if self.appservice is not None:
            await self.appservice.close()

    def adopt_early(self, early: early_synapse.EarlySynapse | None) -> None:
        """The first start() asks this waiting interpreter (Synapse imported) for its Synapse, forked from it,
        instead of spawning one; homeservers of one run share it (qa.homeserver.early_synapse)."""
        if early is not None:
            early.claim()
        self._early = early

    async def _stop_server(self) -> None:
        if self._early is not None:  # stopped before it ever started: its claim on the zygote goes
            self._early, early = None, self._early
            early.release()
        http, self._http = self._http, None
        if http is not None:
            await http.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
                except TimeoutError:
                    _killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        finally:
            # Reached with the process still alive only if we were cancelled mid-stop: don't leave it.
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
            _LIVE_CHILDREN.discard(proc.pid)

    async def restart(self) -> None:
        # The application-service endpoint and its scenarios' routes outlive a restart, as the registration does.
        await self._stop_server()
        await self.start()

    async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> UserCredentials:
        if self._proc is None:
            raise InfraError(f"cannot register @{localpart}: Synapse is not running")
        return await register_with_shared_secret(
            self.base_url, self.shared_secret, localpart, password, admin=admin, session=self._admin_http()
        )

    async def register_session(self, localpart: str, password: str, *, device_name: str) -> UserCredentials:
        # Synapse's admin registration logs the new user in when asked: one request instead of two.
        if self._proc is None:
            raise InfraError(f"cannot register @{localpart}: Synapse is not running")
        return await register_with_shared_secret(
            self.base_url, self.shared_secret, localpart, password, session=self._admin_http(),
            device_name=device_name,
        )

    async def registration_token(self, uses: int, valid_s: float) -> str:
        """Minted (registration.mint_token) by an admin of the harness's own, made on first use (a secret)."""
        if self._admin is None:
            self._admin = await register_with_shared_secret(
                self.base_url, self.shared_secret, f"mqa-admin-{secrets.token_hex(4)}", secrets.token_urlsafe(18),
                admin=True, session=self._admin_http(), device_name="matrix-qa registration tokens")
        return await mint_token(self.base_url, str(self._admin.access_token), uses, valid_s, self._admin_http())

    def _admin_http(self) -> aiohttp.ClientSession:
        """One connection pool for every registration of this server's life (restarts included): a scenario
        registers all its users at once, and new connections per request only add handshakes."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=REGISTRATION_TIMEOUT)
        return self._http

    def _launch_command(self) -> tuple[list[str], dict[str, str] | None]:
        """Synapse behind seeded_boot, always (it remembers jsonschema's schema checks and runs SQLite on the reactor
        thread, qa.homeserver.inline_db); on a fresh server with no template yet, seeded_boot is also asked to create
        the schema and keep a copy for next time."""
        app = [sys.executable, "-m", "qa.homeserver.seeded_boot", "synapse.app.homeserver", "-c", str(self.config_path)]
        db_path = self._sqlite_path()
        if self.template_dir is None or self._template_key is None or db_path is None or db_path.exists():
            return app, None
        request = {"dir": str(self.template_dir / self._template_key), "key": self._template_key, "db": str(db_path)}
        return app, {**os.environ, TEMPLATE_ENV: json.dumps(request)}

    def _seed_database(self) -> None:
        """A fresh server's database starts as a copy of the pristine template, when there is a sound one."""
        db_path = self._sqlite_path()
        if self.template_dir is None or db_path is None or db_path.exists():
            return
        self._template_key = installed_synapse_key(self.server_name)
        if self._template_key is None:
            return
        self.template_note = db_template.install(self.template_dir / self._template_key, self._template_key, db_path)

    def _sqlite_path(self) -> Path | None:
        database = (self._config or {}).get("database") or {}
        if database.get("name") != "sqlite3":
            return None  # extra_config chose another engine: no templates for it
        return Path(database["args"]["database"])

    def _prepare(self) -> None:
        """Write config, logging config and signing key once; restarts reuse them with the same data."""
        if self._config is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = find_free_port()
        extra = dict(self.extra_config)
        if self._hosts_appservice:
            self.appservice = AppserviceHost(self.workdir, self.server_name, self.port)
            extra.setdefault("app_service_config_files", [str(self.appservice.write_registration())])
        config = build_synapse_config(
            workdir=self.workdir,
            port=self.port,
            server_name=self.server_name,
            extra_config=extra,
        )
        signing_key = Path(config["signing_key_path"])
        if not signing_key.exists():
            write_signing_key(signing_key)
        Path(config["log_config"]).write_text(yaml.safe_dump(build_log_config(self.log_path)))
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        self._config = config
        self._seed_database()


async def _fork_early(early: early_synapse.EarlySynapse, hs: SynapseHomeserver, argv: list[str],
                      env: Mapping[str, str] | None, t0: float) -> early_synapse.ForkedSynapse | None:
    """`hs`'s Synapse forked from the early interpreter, within a share of its start's deadline (a zygote that never
    answers leaves the Synapse spawned instead the rest); None when it cannot be."""
    remaining = t0 + hs.start_timeout_s - time.monotonic()
    try:
        return await early_synapse.fork_from(early, argv, env, hs.workdir, hs.stdout_path,
                                             early_synapse.fork_budget(remaining), busy_s=remaining)
    finally:
        early.release()  # its last homeserver has its Synapse: the zygote exits


async def fetch_version(http: aiohttp.ClientSession, base_url: str) -> str | None:
    # The running server's own answer is authoritative; package metadata is the fallback.
    url = base_url + "/_synapse/admin/v1/server_version"
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        # On the pool the registrations use next: the connection is already open when the first one comes.
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            body = await resp.json()
            if resp.status == 200 and isinstance(body.get("server_version"), str):
                return str(body["server_version"])
    try:
        return importlib.metadata.version("matrix-synapse")
    except importlib.metadata.PackageNotFoundError:
        return None


def _start_failure(hs: SynapseHomeserver, problem: str, stdout_offset: int, log_offset: int) -> InfraError:
    """One message that says what went wrong, where to look, and the lines that probably explain it."""
    printed = [line for line in _read_from(hs.stdout_path, stdout_offset) if _meaningful(line)]
    logged = [line for line in _read_from(hs.log_path, log_offset) if _SEVERE.search(line)]
    if any("Failed to listen" in line for line in printed + logged):
        # Lost a race for the port after our own check; say so rather than leave it in a traceback.
        problem += f"; port {hs.port} on 127.0.0.1 is already in use"
    # Errors before logging is configured (bad config) only reach stdout, and the console handler copies
    # later warnings there too, so stdout is the better source; the log file is the fallback.
    lines = (printed or logged)[-_EXCERPT_LINES:]
    where = [str(p) for p in (hs.log_path, hs.stdout_path) if _size(p) > 0] or [str(hs.log_path)]
    message = f"Synapse failed to start ({problem}); see {' and '.join(where)}"
    if lines:
        message += "\n  last lines:\n" + "\n".join("    " + line for line in lines)
    return InfraError(redact(message, hs.secrets))


async def wait_ready(base_url: str, proc: asyncio.subprocess.Process, deadline: float,
                     timeout_s: float) -> str | None:
    """None once /versions answers 200, else why not. Wakes at once if the process exits."""
    url = base_url + VERSIONS_PATH
    exited = asyncio.ensure_future(proc.wait())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if exited.done():
                    return f"exit code {proc.returncode}"
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"did not answer {VERSIONS_PATH} within {timeout_s:g}s"
                await asyncio.wait({exited}, timeout=min(POLL_INTERVAL_S, remaining))
    finally:
        if not exited.done():
            exited.cancel()


def _meaningful(line: str) -> bool:
    # Python's traceback carets (^^^^) take a third of an excerpt and say nothing without a terminal.
    return bool(line.strip()) and not _CARETS.match(line)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
