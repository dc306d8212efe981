"""Test users: real matrix-nio clients with a background sync that feeds an event stream to wait on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    LoginError,
    RoomCreateError,
    RoomInviteResponse,
    RoomLeaveResponse,
    RoomPreset,
    RoomSendError,
    RoomSendResponse,
    ShareGroupSessionResponse,
    SyncError,
    UploadResponse,
)
from nio.store import DefaultStore
from peewee import SqliteDatabase

from qa.evidence.events import describe_event
from qa.kernel.clock import mono_ms
from qa.kernel.e2ee import ENCRYPTION_STATE, MEGOLM, event_view, maintain_keys
from qa.kernel.errors import HomeserverError, InfraError
from qa.shared.olm import sent_bodies
from qa.waiting import Stream

RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
# Between claims of a one-time key the server did not have yet: it stores a device's keys before its one-time
# keys (one keys/upload request), so the key follows within that request; no sync tells us when.
CLAIM_RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)
# A test user's first sync leaves out the server's push rules: nothing here reads them, and nio validated and
# parsed them (some 70 rules) on the harness's loop for every test user, a stall of tens of ms per scenario's
# setup that held up the other job's bot boot under --jobs 2. Later syncs carry them only when they change.
FIRST_SYNC_FILTER: dict[str, Any] = {"account_data": {"not_types": ["m.push_rules"]}}
# A scenario's test users start syncing once its rooms are made and joined (qa.scenario.runner): one first sync
# each then brings the rooms whole, where syncing from before createRoom woke every member's long-poll on each
# batch of creation events, invite and join (~5 /sync per scenario, some 13 % of Synapse's request work). The
# timeline is the rooms' whole history (a fresh room holds a dozen events or so), so the events stream still
# starts at m.room.create, as it did when every event came one sync at a time. 100: Synapse caps a filter's
# timeline there (its filter_timeline_limit default; tuwunel too). A first sync the server cut anyway (`limited`)
# is refused, naming the room, rather than leaving events out of the stream unsaid.
SETUP_SYNC_FILTER: dict[str, Any] = {**FIRST_SYNC_FILTER, "room": {"timeline": {"limit": 100}}}


def message_content(
    body: str,
    *,
    mention: tuple[str, str] | None = None,
    thread_root: str | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A text message as a modern client sends it; `mention` is (user id, display name)."""
    content: dict[str, Any] = {"msgtype": "m.text", "body": body, "m.mentions": {}}
    if mention:
        user_id, name = mention
        content["body"] = f"{name}: {body}"
        content["format"] = "org.matrix.custom.html"
        pill = f'<a href="https://matrix.to/#/{user_id}">{html.escape(name)}</a>'
        content["formatted_body"] = f"{pill}: {html.escape(body)}"
        content["m.mentions"] = {"user_ids": [user_id]}
    if thread_root:
        content["m.relates_to"] = {
            "rel_type": "m.thread", "event_id": thread_root, "is_falling_back": True,
            "m.in_reply_to": {"event_id": reply_to or thread_root},
        }
    elif reply_to:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
    return content


def media_content(
    msgtype: str, mxc: str, *, filename: str, mimetype: str, size: int, caption: str | None,
    encrypted_keys: dict[str, Any] | None = None, mention: tuple[str, str] | None = None,
    thread_root: str | None = None,
) -> dict[str, Any]:
    """An attachment message as a modern client sends it: the caption is the body (Matrix 1.10, with
    `filename`); in an encrypted room the URL moves into `file`, an EncryptedFile with its keys."""
    base = message_content(caption, mention=mention, thread_root=thread_root) if caption else \
        message_content(filename, thread_root=thread_root)
    content = {**base, "msgtype": msgtype, "filename": filename, "info": {"mimetype": mimetype, "size": size}}
    if encrypted_keys is not None:
        content["file"] = {**encrypted_keys, "url": mxc, "mimetype": mimetype}
    else:
        content["url"] = mxc
    return content


async def login_for_token(base_url: str, user_id: str, password: str) -> tuple[str, str]:
    """A fresh session for someone else (the bot under test): (access token, device id). The client is closed
    without logging out, so the session stays valid for whoever is handed it."""
    client = AsyncClient(base_url, user_id, config=AsyncClientConfig(request_timeout=30))
    try:
        resp = await client.login(password, device_name="matrix-qa launch")
        if isinstance(resp, LoginError):
            raise InfraError(f"could not log in as the bot {user_id} to hand it a session: {resp.message}")
        return resp.access_token, resp.device_id
    finally:
        await client.close()


async def _put_direct(client: AsyncClient, who: str, content: dict[str, list[str]]) -> None:
    path = Api._build_path(["user", client.user_id, "account_data", "m.direct"],
                           {"access_token": client.access_token})
    resp = await client.send("PUT", path, json.dumps(content), headers={"Content-Type": "application/json"})
    if resp.status != 200:
        raise HomeserverError(f"{who} could not set m.direct: HTTP {resp.status}")


async def put_direct_as(base_url: str, user_id: str, access_token: str, content: dict[str, list[str]]) -> None:
    """Replace someone else's m.direct (the bot under test's) through a session the harness made for it, with a
    client of its own that is closed without logging out: the session stays the bot's."""
    client = AsyncClient(base_url, user_id, config=AsyncClientConfig(request_timeout=30))
    client.access_token, client.user_id = access_token, user_id  # nio sets user_id only when it logs in itself
    try:
        await _put_direct(client, "the bot's account", content)
    finally:
        await client.close()


class _TestUserStore(DefaultStore):
    """nio's crypto store with SQLite's fsyncs off: a test user's store lives as long as its run, and nio writes
    it synchronously on the harness's event loop (every sync that brings keys, every encrypted send), where
    each fsynced commit stalls every scenario, the mock provider and each reply's observation. A killed
    process still leaves every commit in the OS's cache; only a machine crash could lose one, and with it the
    run that needed it."""

    def _create_database(self) -> SqliteDatabase:
        return _StoreDatabase(self.database_path,
                              pragmas={"foreign_keys": 1, "secure_delete": 1, "synchronous": 0})

    def save_encrypted_rooms(self, rooms: Any) -> None:
        """nio calls this after every sync, mostly with no room: that is a transaction and a query for nothing."""
        if rooms:
            super().save_encrypted_rooms(rooms)


class _StoreDatabase(SqliteDatabase):
    """nio wraps every store call (several per sync of an E2EE user) in `bind_ctx(models)`, which binds each of
    its dozen models and every model reachable from it to this database, walking the model graph, and binds them
    all back on the way out: ~0.3 ms a call, on the harness's loop. Here the models reachable are found once, and
    a call binds only those not bound to this database already; nothing is bound back, since every store call
    binds its own database first (nio touches the models only inside bind_ctx), so the bindings a call sees are
    the same."""

    def bind_ctx(self, models: Any, bind_refs: bool = True, bind_backrefs: bool = True) -> Any:
        return _BindTo(self, models, _reachable(tuple(models), bind_refs, bind_backrefs))


_REACHABLE: dict[tuple[Any, bool, bool], tuple[Any, ...]] = {}


def _reachable(models: tuple[Any, ...], refs: bool, backrefs: bool) -> tuple[Any, ...]:
    """The models and every model peewee's bind would reach from them (their graph of references), once."""
    key = (models, refs, backrefs)
    if key not in _REACHABLE:
        found = dict.fromkeys(models)
        for model in models:
            if refs or backrefs:
                found.update(dict.fromkeys(m for _, m, _ in model._meta.model_graph(refs=refs, backrefs=backrefs)))
        _REACHABLE[key] = tuple(found)
    return _REACHABLE[key]


class _BindTo(contextlib.AbstractContextManager[Any]):
    def __init__(self, database: SqliteDatabase, models: Any, reachable: tuple[Any, ...]) -> None:
        self._database = database
        self._models = models
        self._reachable = reachable

    def __enter__(self) -> Any:
        for model in self._reachable:
            if model._meta.database is not self._database:
                model._meta.set_database(self._database)
        return self._models

    def __exit__(self, *_exc: object) -> None:
        return None


class _TestUserClient(AsyncClient):
    """nio's client, telling whoever asks (the fault proxy's `hold_to_device: m.room_key`) the Olm ciphertexts
    of each room key it shares: nio sends a Megolm session's shares as requests answered by a
    ShareGroupSessionResponse, and only those, so the response class marks them."""

    on_room_keys: Callable[[set[str]], None] | None = None

    async def _send(self, response_class: type, method: str, path: str, data: Any = None,
                    *args: Any, **kwargs: Any) -> Any:
        if response_class is ShareGroupSessionResponse and self.on_room_keys is not None:
            self.on_room_keys(sent_bodies(data))
        return await super()._send(response_class, method, path, data, *args, **kwargs)


class Actor:
    def __init__(
        self, name: str, base_url: str, user_id: str, password: str, store_dir: Path, *, encryption: bool = False
    ) -> None:
        self.name = name
        self.user_id = user_id
        self._password = password
        self._encryption = encryption
        store_dir.mkdir(parents=True, exist_ok=True)
        # Encryption on means a real Olm/Megolm identity with its own crypto store for this test user.
        self.client = _TestUserClient(
            base_url, user_id, store_path=str(store_dir),
            config=AsyncClientConfig(encryption_enabled=encryption, request_timeout=45, store=_TestUserStore),
        )
        self.events: Stream[dict[str, Any]] = Stream(describe_event)
        # To-device events as nio parsed them (key verification), for qa.kernel.e2ee's SAS flow to wait on.
        self.to_device: Stream[Any] = Stream(lambda e: f"{type(e).__name__} from {getattr(e, 'sender', '?')}")
        # One item per finished sync (keys maintained too): what device-list waits re-check on.
        self.syncs: Stream[int] = Stream(lambda n: f"sync {n}")
        self._sync_task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()
        self._cut_rooms: list[str] = []  # joined rooms whose first-sync timeline the server cut short
        # Joined rooms whose timeline a later sync cut short (`limited`), once per cut: the events before the cut
        # never reach the stream. The look after the bot's exit (qa.scenario.fence) is not whole across one.
        self.cut_later: list[str] = []
        # Rooms it left (a leave step, or a sync that lists it as left): its own leave reaches no timeline of its
        # joined rooms, and nio keeps such a room in its room list.
        self.left_rooms: set[str] = set()

    async def login(self) -> None:
        resp = await self.client.login(self._password, device_name=f"matrix-qa {self.name}")
        if isinstance(resp, LoginError):
            raise HomeserverError(f"test user {self.name} ({self.user_id}) could not log in: {resp.message}")

    def adopt_session(self, access_token: str, device_id: str) -> None:
        """Use a session made for this actor when its user was registered (device `matrix-qa <name>`), instead
        of logging in: the same state a login leaves, the crypto store included, one request fewer."""
        self.client.restore_login(self.user_id, device_id, access_token)

    async def start_sync(self, first_filter: dict[str, Any] = FIRST_SYNC_FILTER) -> None:
        """Sync from now on; returns after the first sync (`first_filter`, SETUP_SYNC_FILTER for whole rooms)."""
        self._sync_task = asyncio.create_task(self._sync_loop(first_filter), name=f"sync:{self.name}")
        await self._first_sync.wait()
        if first_filter is SETUP_SYNC_FILTER and self._cut_rooms:
            raise HomeserverError(f"{self.name}'s first sync cut the timeline of {', '.join(self._cut_rooms)} (the "
                                  "homeserver caps a sync's timeline below the room's history): events of the "
                                  "scenario's setup would be missing from what the test users saw")

    async def _sync_loop(self, first_filter: dict[str, Any]) -> None:
        token: str | None = None
        failures = 0
        while True:
            try:
                resp = await self.client.sync(timeout=30_000, since=token, full_state=token is None,
                                              sync_filter=first_filter if token is None else None)
            except (OSError, TimeoutError) as exc:
                resp = SyncError(str(exc))
            if isinstance(resp, SyncError):
                await asyncio.sleep(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)])  # retry backoff
                failures += 1
                continue
            failures = 0
            cut = [room_id for room_id, room in resp.rooms.join.items() if room.timeline.limited]
            if token is None:
                self._cut_rooms = cut
            else:
                self.cut_later += cut
            for room_id, room in resp.rooms.join.items():
                for event in room.timeline.events:
                    await self.events.append({**event_view(event, room_id), "_seenMs": mono_ms()})
            self.left_rooms.difference_update(resp.rooms.join)
            self.left_rooms.update(getattr(resp.rooms, "leave", None) or ())  # a stand-in response may have none
            for to_device in resp.to_device_events:
                await self.to_device.append(to_device)
            await maintain_keys(self.client)
            token = resp.next_batch
            self._first_sync.set()
            await self.syncs.append(len(self.syncs.items) + 1)

    async def create_room(self, name: str, invite: list[str], *, encrypted: bool = False, direct: bool = False
                          ) -> str:
        # A DM as Element opens one: trusted_private_chat (both sides admins) and is_direct on the invites.
        resp = await self.client.room_create(
            name=None if direct else name, invite=invite, is_direct=direct,
            preset=RoomPreset.trusted_private_chat if direct else RoomPreset.private_chat,
            initial_state=[ENCRYPTION_STATE] if encrypted else [])
        if isinstance(resp, RoomCreateError):
            raise HomeserverError(f"{self.name} could not create room {name}: {resp.message}")
        return resp.room_id

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        if isinstance(resp, JoinError):
            raise HomeserverError(f"{self.name} could not join {room_id}: {resp.message}")
        self.left_rooms.discard(room_id)

    async def leave(self, room_id: str) -> None:
        resp = await self.client.room_leave(room_id)
        if not isinstance(resp, RoomLeaveResponse):
            raise HomeserverError(f"{self.name} could not leave {room_id}: {getattr(resp, 'message', resp)}")
        self.left_rooms.add(room_id)

    async def invite(self, room_id: str, user_id: str) -> None:
        resp = await self.client.room_invite(room_id, user_id)
        if not isinstance(resp, RoomInviteResponse):
            raise HomeserverError(f"{self.name} could not invite {user_id} to {room_id}: "
                                  f"{getattr(resp, 'message', resp)}")

    def second_device(self, device: str, store_dir: Path) -> Actor:
        """Another device of this actor's user, with its own crypto store (login_device)."""
        device_actor = Actor(f"{self.name}.{device}", str(self.client.homeserver), self.user_id, self._password,
                             store_dir, encryption=self._encryption)
        device_actor.client.on_room_keys = self.client.on_room_keys
        return device_actor

    async def mark_direct(self, other: str, room_id: str) -> None:
        """List the room as a DM with `other` in this user's m.direct account data, as clients do."""
        await self.set_direct({other: [room_id]})

    async def set_direct(self, content: dict[str, list[str]]) -> None:
        """Replace this user's whole m.direct account data ({other user: [room id, ...]})."""
        await _put_direct(self.client, self.name, content)

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        # Trust on first use (see qa.kernel.e2ee): unverified devices get the room key. Plain rooms ignore the flag.
        resp = await self.client.room_send(room_id, event_type, content, ignore_unverified_devices=True)
        if isinstance(resp, RoomSendError):
            raise InfraError(f"{self.name} could not send to {room_id}: {resp.message}")
        return resp.event_id

    async def know_devices(self, room_id: str, user_ids: list[str], timeout_s: float) -> None:
        """Before the first encrypted send: every member's join has reached us and their devices are known,
        so the room key goes to all of them (nio shares it with the devices it knows at send time)."""
        for user_id in user_ids:
            await self.events.wait_for(
                lambda e, u=user_id: e.get("type") == "m.room.member" and e.get("state_key") == u
                and e.get("room_id") == room_id and (e.get("content") or {}).get("membership") == "join",
                timeout_s, f"{self.name} to see {user_id} join {room_id}")
        if self.client.olm:
            self.client.olm.users_for_key_query.update(user_ids)
        await maintain_keys(self.client)
        missing = [u for u in user_ids if not list(self.client.device_store.active_user_devices(u))]
        if missing:
            raise InfraError(f"{self.name} knows no device of {', '.join(missing)} after a key query")
        devices = [d for u in user_ids for d in self.client.device_store.active_user_devices(u)]
        lacking = await open_olm_sessions(self.client, devices, timeout_s)
        if lacking:
            raise InfraError(f"{self.name} has no Olm session with {lacking} after {timeout_s:g} s of one-time key "
                             "claims: the device never uploaded one-time keys")

    async def send_undecryptable(self, room_id: str) -> str:
        """An encrypted message under a Megolm session nobody else ever receives the key for (as a device that
        withholds its room keys would send): the bot must trace it as undecryptable and carry on."""
        assert self.client.olm, "send_undecryptable needs an encrypted test user"
        content = {
            "algorithm": MEGOLM,
            "sender_key": self.client.olm.account.identity_keys["curve25519"],
            "device_id": self.client.device_id,
            "session_id": base64.b64encode(os.urandom(32)).decode().rstrip("="),
            "ciphertext": base64.b64encode(os.urandom(96)).decode().rstrip("="),
        }
        # Straight to the API: room_send would (rightly) encrypt again and share a real key.
        return await self.send_unencrypted(room_id, "m.room.encrypted", content)

    async def send_unencrypted(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """An event sent as it is, even in an encrypted room (no room key shared, nothing encrypted)."""
        method, path, data = Api.room_send(self.client.access_token, room_id, event_type, content, str(uuid.uuid4()))
        resp = await self.client._send(RoomSendResponse, method, path, data, (room_id,))
        if isinstance(resp, RoomSendError):
            raise InfraError(f"{self.name} could not send to {room_id}: {resp.message}")
        return resp.event_id

    async def upload(
        self, data: bytes, mimetype: str, filename: str, *, encrypt: bool
    ) -> tuple[str, dict[str, Any] | None]:
        """Put a file in the content repository: (mxc URI, the EncryptedFile keys when `encrypt`)."""
        resp, keys = await self.client.upload(lambda *_: io.BytesIO(data), content_type=mimetype,
                                              filename=filename, encrypt=encrypt, filesize=len(data))
        if not isinstance(resp, UploadResponse):
            raise InfraError(f"{self.name} could not upload {filename}: {getattr(resp, 'message', resp)}")
        return resp.content_uri, keys

    async def react(self, room_id: str, target: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        return await self.send(room_id, content, "m.reaction")

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        await self.client.close()


async def open_olm_sessions(client: AsyncClient, devices: list[Any], timeout_s: float,
                            has: Callable[[Any], bool] | None = None) -> str:
    """Until the client has an Olm session with each device: its one-time keys claimed (all at once), the
    claim retried for those the server had none for yet, bounded. Returns what is still missing ("" when
    nothing), with the server's last answer.

    Why: nio's room_send shares a new room key only with the devices it has an Olm session with and skips
    the others silently (nio/crypto/olm_machine.py share_group_session_parallel: "Missing Olm session ...
    skipping"), then marks the key shared. Synapse stores and announces a device's keys before its one-time
    keys (one keys/upload request, synapse/handlers/e2e_keys.py), so a device learnt in between has no key
    to claim yet, and would never get the room key of the next message.

    `has` says which device already has the session wanted (default: any Olm session with it)."""
    olm = client.olm
    if not olm:
        return ""

    def any_session(device: Any) -> bool:
        return olm.session_store.get(device.curve25519) is not None

    done = has or any_session
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    attempt = 0
    while lacking := [d for d in devices if not done(d)]:
        wanted: dict[str, list[str]] = {}
        for device in lacking:
            wanted.setdefault(device.user_id, []).append(device.id)
        resp = await client.keys_claim(wanted)
        lacking = [d for d in lacking if not done(d)]
        left = deadline - loop.time()
        if not lacking:
            return ""
        if left <= 0:
            names = ", ".join(f"device {d.id} of {d.user_id}" for d in lacking)
            return f"{names} ({attempt + 1} one-time key claims; last answer: {resp})"
        await asyncio.sleep(min(CLAIM_RETRY_S[min(attempt, len(CLAIM_RETRY_S) - 1)], left))  # retry backoff
        attempt += 1
    return ""
