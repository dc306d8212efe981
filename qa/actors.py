"""Test users: real matrix-nio clients with a background sync that feeds an event stream to wait on."""

from __future__ import annotations

import asyncio
import contextlib
import html
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinError,
    LoginError,
    RoomCreateError,
    RoomPreset,
    RoomSendError,
    SyncError,
)

from qa.clock import mono_ms
from qa.errors import InfraError
from qa.waiting import Stream

RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)


def describe_event(event: dict[str, Any]) -> str:
    content = event.get("content") or {}
    rel = content.get("m.relates_to") or {}
    parts = [event.get("type", "?"), f"from={event.get('sender')}", f"id={event.get('event_id')}"]
    if "body" in content:
        body = str(content["body"])
        parts.append(f"body={body[:80]!r}")
    if rel:
        parts.append(f"relates_to={ {k: v for k, v in rel.items() if k != 'm.in_reply_to'} }")
    return " ".join(parts)


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


class Actor:
    def __init__(self, name: str, base_url: str, user_id: str, password: str, store_dir: Path) -> None:
        self.name = name
        self.user_id = user_id
        self._password = password
        store_dir.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            base_url, user_id, store_path=str(store_dir),
            config=AsyncClientConfig(encryption_enabled=False, request_timeout=45),
        )
        self.events: Stream[dict[str, Any]] = Stream(describe_event)
        self._sync_task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()

    async def login(self) -> None:
        resp = await self.client.login(self._password, device_name=f"matrix-qa {self.name}")
        if isinstance(resp, LoginError):
            raise InfraError(f"test user {self.name} ({self.user_id}) could not log in: {resp.message}")

    async def start_sync(self) -> None:
        self._sync_task = asyncio.create_task(self._sync_loop(), name=f"sync:{self.name}")
        await self._first_sync.wait()

    async def _sync_loop(self) -> None:
        token: str | None = None
        failures = 0
        while True:
            try:
                resp = await self.client.sync(timeout=30_000, since=token, full_state=token is None)
            except (OSError, TimeoutError) as exc:
                resp = SyncError(str(exc))
            if isinstance(resp, SyncError):
                await asyncio.sleep(RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)])  # retry backoff
                failures += 1
                continue
            failures = 0
            for room_id, room in resp.rooms.join.items():
                for event in room.timeline.events:
                    await self.events.append({**event.source, "room_id": room_id, "_seenMs": mono_ms()})
            token = resp.next_batch
            self._first_sync.set()

    async def create_room(self, name: str, invite: list[str]) -> str:
        resp = await self.client.room_create(name=name, invite=invite, preset=RoomPreset.private_chat)
        if isinstance(resp, RoomCreateError):
            raise InfraError(f"{self.name} could not create room {name}: {resp.message}")
        return resp.room_id

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        if isinstance(resp, JoinError):
            raise InfraError(f"{self.name} could not join {room_id}: {resp.message}")

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        resp = await self.client.room_send(room_id, event_type, content)
        if isinstance(resp, RoomSendError):
            raise InfraError(f"{self.name} could not send to {room_id}: {resp.message}")
        return resp.event_id

    async def react(self, room_id: str, target: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        return await self.send(room_id, content, "m.reaction")

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sync_task
        await self.client.close()
