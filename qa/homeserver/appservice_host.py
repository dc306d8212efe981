"""The harness's side of application-service bots (issue 33): the service URL of the one registration a homeserver
loads at boot, which takes the homeserver's pushed transactions and forwards each scenario's share to that
scenario's bot (the pure rules: qa.shared.appservice).

Lifetime: the homeserver's. `listen()` before the homeserver boots (it pushes from its first moment), `close()`
after it is gone; a restart of the homeserver keeps it. Each scenario's bot holds a `Lease`: its sub-namespace, a
hs_token of its own (never the registration's), the port it listens on, and a queue the harness delivers in order,
retrying while the bot is not yet listening, so nothing pushed before the bot was up is lost. The scenario's push
fault rules (`target: push`, qa.harness.push_faults) act here, on the way to its bot: a transaction held back
(`delay_ms`), or put again under the same id after the bot's 200 (`redeliver`); each hit is filed with the fault
proxy's (Faults served).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from qa.homeserver.ports import free_port
from qa.kernel.clock import mono_ms
from qa.kernel.errors import InfraError
from qa.shared import appservice as rules
from qa.waiting import Changes

# A bot that does not listen yet is tried again this often; one that answers with an error, with backoff to this.
RETRY_S = 0.05
MAX_BACKOFF_S = 1.0
DELIVERY_TIMEOUT = aiohttp.ClientTimeout(total=10)
REGISTER_TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclass
class Lease:
    """One scenario's application service: what its bot is told, and what was forwarded to it."""

    key: str
    prefix: str
    user_id: str
    hs_token: str
    as_port: int
    # The main user's own session (the registration logs it in): MATRIX_QA_ACCESS_TOKEN / MATRIX_QA_DEVICE_ID.
    access_token: str = ""
    device_id: str = ""
    queue: asyncio.Queue[tuple[str, list[Any], float]] = field(default_factory=asyncio.Queue)
    forwarded: int = 0  # numbers the parts forwarded to this bot: its transaction ids
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # The scenario's push fault rules (qa.harness.push_faults.PushFaults, handed over by the scenario: this floor
    # knows them only by what they do): which transaction is delayed or redelivered, and the hits' records.
    faults: Any = None
    hits: list[dict[str, Any]] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)  # notified on every hit and every push's end

    def hit(self, record: dict[str, Any]) -> dict[str, Any]:
        self.hits.append(record)
        self.changes.notify()
        return record


class AppserviceHost:
    """Receives `PUT /_matrix/app/v1/transactions/{txnId}` from the homeserver and forwards by scenario."""

    def __init__(self, workdir: Path, server_name: str, homeserver_port: int | None = None) -> None:
        self.server_name = server_name
        self.as_token = secrets.token_urlsafe(32)
        self.hs_token = secrets.token_urlsafe(32)
        # Every port handed out here (this endpoint's, each bot's) and the homeserver's: never one twice.
        self._taken: set[int] = {homeserver_port} if homeserver_port else set()
        self.port = free_port(self._taken)
        self.registration_path = workdir / "appservice-registration.yaml"
        self.routes = rules.Routes()
        self.leases: dict[str, Lease] = {}
        self.pushes = 0
        self.rejected = 0
        # The homeserver's transaction ids since it last booted: a retried one is not forwarded twice. Synapse
        # numbers them afresh after a restart, so the bots get ids of the harness's own (Lease.forwarded): a bot
        # remembers the ids it has seen, and would drop a new transaction that reused one.
        self._seen: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> list[str]:
        return [self.as_token, self.hs_token,
                *(t for lease in self.leases.values() for t in (lease.hs_token, lease.access_token) if t)]

    def write_registration(self) -> Path:
        """The registration the homeserver loads (app_service_config_files), readable by its owner only."""
        content = rules.registration(url=self.url, as_token=self.as_token, hs_token=self.hs_token,
                                     server_name=self.server_name)
        self.registration_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.registration_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(content, fh, sort_keys=False)
        return self.registration_path

    def homeserver_boots(self) -> None:
        """The homeserver is (re)starting: its transaction ids start again."""
        self._seen.clear()

    async def listen(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_put(rules.TRANSACTION_PATH, self._transaction)
        # The spec's other pushes (user and alias queries, ping): nothing here owns users or aliases on demand.
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            raise InfraError(f"the application-service endpoint cannot listen on 127.0.0.1:{self.port}: {exc}") \
                from None
        self._runner = runner

    async def close(self) -> None:
        for key in list(self.leases):
            await self.release(key)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def open_lease(self, base_url: str, localpart: str, rooms: list[str] | None = None,
                         push_faults: Any = None) -> Lease:
        """A scenario's sub-namespace, its main user registered by the application service (no password), a
        hs_token and a port for its bot, the room routing that sends it its share of the pushes, and the push
        fault rules acting on that share."""
        key = secrets.token_hex(4)
        prefix = rules.scenario_prefix(key)
        made = await self._register(base_url, prefix + localpart)
        lease = Lease(key=key, prefix=prefix, user_id=made["user_id"], hs_token=secrets.token_urlsafe(32),
                      as_port=free_port(self._taken), access_token=str(made.get("access_token") or ""),
                      device_id=str(made.get("device_id") or ""), faults=push_faults)
        self.routes.add(key, prefix, rooms or [])
        self.leases[key] = lease
        lease.task = asyncio.get_running_loop().create_task(self._deliver(lease), name=f"appservice-{key}")
        return lease

    def bot_registration(self, lease: Lease, localpart: str) -> dict[str, Any]:
        return rules.bot_registration(url=f"http://127.0.0.1:{lease.as_port}", as_token=self.as_token,
                                      hs_token=lease.hs_token, prefix=lease.prefix, localpart=lease.prefix + localpart,
                                      server_name=self.server_name)

    async def release(self, key: str) -> dict[str, Any]:
        """Stop forwarding to a scenario; what was forwarded to it, for its record."""
        self.routes.remove(key)
        lease = self.leases.pop(key, None)
        if lease is None:
            return {}
        if lease.task is not None:
            lease.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease.task
        return {"delivered": lease.delivered, "latenciesMs": lease.latencies_ms, "refused": lease.refused,
                "faultHits": lease.hits}

    async def set_push_faults(self, key: str, rules: Sequence[Any], why: str = "set_faults") -> None:
        """A set_faults step: the scenario's push rules from here on (counting afresh)."""
        lease = self.leases.get(key)
        if lease is not None and lease.faults is not None:
            lease.faults.install(rules, why, mono_ms())

    async def wait_push_hits(self, key: str, condition: Callable[[], bool], timeout_s: float) -> None:
        """Until `condition()` holds, re-checked on every push hit of the scenario; TimeoutError past timeout_s."""
        await self.leases[key].changes.until(condition, timeout_s)

    async def _register(self, base_url: str, localpart: str) -> dict[str, Any]:
        """`m.login.application_service`: the registration's as_token makes a user of its namespace."""
        url = base_url.rstrip("/") + "/_matrix/client/v3/register"
        body = {"type": "m.login.application_service", "username": localpart,
                "initial_device_display_name": "matrix-qa launch"}
        try:
            async with self._session().post(url, json=body, timeout=REGISTER_TIMEOUT,
                                            headers={"Authorization": f"Bearer {self.as_token}"}) as resp:
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise InfraError(f"registering @{localpart} as the application service failed: {exc}") from None
        if resp.status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("user_id"), str):
            errcode = answer.get("errcode") if isinstance(answer, dict) else None
            raise InfraError(f"registering @{localpart} as the application service failed: HTTP {resp.status} "
                             f"{errcode or ''}".rstrip())
        return answer

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _transaction(self, request: web.Request) -> web.Response:
        if not rules.token_matches(rules.bearer_token(request.headers, request.query), self.hs_token):
            self.rejected += 1
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "bad hs_token"}, status=403)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": "M_NOT_JSON", "error": "not JSON"}, status=400)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return web.json_response({"errcode": "M_BAD_JSON", "error": "no events"}, status=400)
        txn_id = request.match_info["txn_id"]
        if txn_id in self._seen:
            return web.json_response({})  # a retry of one already taken (its answer was lost): once is enough
        self._seen.add(txn_id)
        self.pushes += 1
        received = time.monotonic()
        for key, part in self.routes.split(e for e in events if isinstance(e, dict)).items():
            lease = self.leases[key]
            lease.forwarded += 1
            lease.queue.put_nowait((f"mqa-{lease.forwarded}", part, received))
        # Acknowledged at once: a bot not yet listening must not hold the homeserver's pushes to every other one.
        return web.json_response({})

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "not here"}, status=404)

    async def _deliver(self, lease: Lease) -> None:
        """Forward a scenario's parts in order, each until its bot takes it, its push faults on the way; ends when
        the lease does."""
        while True:
            txn_id, events, received = await lease.queue.get()
            decided = lease.faults.decide(events) if lease.faults is not None else None
            rule, occurrence = decided if decided is not None else (None, 0)
            url = f"http://127.0.0.1:{lease.as_port}" + rules.TRANSACTION_PATH.format(txn_id=txn_id)
            data = json.dumps({"events": events})
            if rule is not None and rule.delay_ms is not None:
                hit = lease.hit(lease.faults.hit(rule, occurrence, txn_id, mono_ms()))
                await asyncio.sleep(rule.delay_ms / 1000)  # the fault itself: the transaction held back
                hit["endedAt"] = round(mono_ms(), 1)
                lease.changes.notify()
            tries = await self._until_taken(lease, url, data, txn_id)
            lease.delivered += 1
            if tries == 1 and rule is None:  # the forwarding's own cost: not a wait for the bot, nor a fault's
                lease.latencies_ms.append(round((time.monotonic() - received) * 1000, 2))
            if rule is not None and rule.redeliver is not None:
                await self._redeliver(lease, rule, occurrence, url, data, txn_id)

    async def _until_taken(self, lease: Lease, url: str, data: str, txn_id: str) -> int:
        """PUT a transaction until the bot answers 200; how many tries it took."""
        wait, tries = RETRY_S, 0
        while True:
            tries += 1
            status = await self._put(url, data, lease.hs_token)
            if status == 200:
                return tries
            if status is not None and len(lease.refused) < 20:
                lease.refused.append(f"transaction {txn_id}: HTTP {status}")
            await asyncio.sleep(wait)  # a retry pace, not a synchronisation: the bot decides when it listens
            wait = RETRY_S if status is None else min(wait * 2, MAX_BACKOFF_S)

    async def _redeliver(self, lease: Lease, rule: Any, occurrence: int, url: str, data: str,
                         txn_id: str) -> None:
        """The same transaction again, as a homeserver that never saw the bot's 200 sends it: same id, same body,
        once per time asked; each try is a hit with the bot's answer (none: the connection failed)."""
        for _ in range(rule.redeliver or 0):
            hit = lease.hit(lease.faults.hit(rule, occurrence, txn_id, mono_ms()))
            hit["status"] = await self._put(url, data, lease.hs_token)
            hit["endedAt"] = round(mono_ms(), 1)
            lease.changes.notify()

    async def _put(self, url: str, data: str, token: str) -> int | None:
        try:
            async with self._session().put(url, data=data, timeout=DELIVERY_TIMEOUT,
                                           headers={"Authorization": f"Bearer {token}",
                                                    "Content-Type": "application/json"}) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None
