"""The bot's outbound edge: every event it sends (replies, notices, reactions, raw content), retried under one
transaction id so that however many tries reach the homeserver they make one event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
from nio import AsyncClient, RoomSendError

from qa.agent.config import AgentConfig
from qa.agent.formatting import reply_contents
from qa.agent.policy import reply_thread
from qa.agent.verification import BotE2EE, send_in_the_clear
from qa.kernel.trace import Trace

# Retry pacing when the homeserver is unreachable (e.g. restarting): a backoff, not a synchronization point.
RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
# A send is tried this often (429s, 5xx, dropped connections), always under one transaction id, so however
# many tries reach the homeserver it makes one event.
SEND_ATTEMPTS = 6
MAX_RETRY_AFTER_S = 30.0  # a homeserver asking for longer is not waited for: the send is given up, traced


def reply_content(text: str, thread_root: str | None, in_reply_to: str | None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": text, "m.mentions": {}}
    if thread_root:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": in_reply_to or thread_root},
        }
    return content



class Sender:
    """Sends the bot's events to Matrix: threads, rich replies, split answers, retries under one transaction id."""

    def __init__(self, config: Callable[[], AgentConfig], client: Callable[[], AsyncClient], e2ee: BotE2EE,
                 trace: Trace) -> None:
        # Read at each send, not kept: a reloaded config and a client replaced by a relogin apply at once.
        self._current_config = config
        self._current_client = client
        self.e2ee = e2ee
        self._trace = trace
        self.sent: dict[str, tuple[str, str | None]] = {}  # bot event id -> (room, thread root)

    @property
    def _config(self) -> AgentConfig:
        return self._current_config()

    @property
    def client(self) -> AsyncClient:
        return self._current_client()

    async def post(self, room_id: str, content: dict[str, Any], thread_root: str | None) -> str | None:
        """Send any message content (approval requests, outcomes), in the session's thread when it has one."""
        if thread_root:
            content = {**content, "m.relates_to": reply_content("", thread_root, None)["m.relates_to"]}
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def post_content(self, room_id: str, content: dict[str, Any], thread_root: str | None) -> str | None:
        """Send message content as it is (streaming drafts and edits carry their own relations)."""
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def react(self, room_id: str, target: str, key: str) -> str | None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
        return await self._send(room_id, "m.reaction", content, None)

    async def send_reply(self, room_id: str, text: str, thread_root: str | None, in_reply_to: str | None) -> str | None:
        """Post an answer: markdown as sanitized HTML, split into ordered parts when it is long. Returns the
        first part's id (what the reply "is"); a split reply also traces `reply.parts` with every part."""
        replies, bugs = self._config.replies, self._config.mutations
        if self._config.reply_in_first_room and self._config.rooms:
            room_id = next(iter(self._config.rooms))  # the test-only mutation: answers leave their room
        thread = reply_thread(thread_root, replies.thread_replies)
        if thread:
            fallback = thread if bugs.reply_fallback_to_root else in_reply_to
            relates: dict[str, Any] | None = reply_content("", thread, fallback)["m.relates_to"]
        else:
            # At the top level the answer carries no relation, unless its trigger was in a thread that the
            # answer leaves (threadReplies: off): then a rich reply says what it answers.
            relates = {"m.in_reply_to": {"event_id": in_reply_to}} if thread_root and in_reply_to else None
        contents = reply_contents(text, relates, limit=replies.text_chunk_limit, markdown=replies.markdown,
                                  raw_html=bugs.raw_html, truncate=bugs.truncate_long_replies)
        sent: list[str] = []
        for content in contents:
            event_id = await self._send(room_id, "m.room.message", content, thread)
            if event_id is None:
                break  # a gap in the middle would garble the answer; the send error is traced
            sent.append(event_id)
        if len(contents) > 1:
            self._trace.emit("reply.parts", inReplyTo=in_reply_to, roomId=room_id, parts=sent,
                             expected=len(contents))
        return sent[0] if sent else None

    async def send_notice(self, room_id: str, text: str, thread_root: str | None, in_reply_to: str | None
                          ) -> str | None:
        content = {**reply_content(text, thread_root, in_reply_to), "msgtype": "m.notice"}
        return await self._send(room_id, "m.room.message", content, thread_root)

    async def _send(
        self, room_id: str, event_type: str, content: dict[str, Any], thread_root: str | None
    ) -> str | None:
        mutations = self._config.mutations
        txn = uuid.uuid4().hex
        for tries in range(1, SEND_ATTEMPTS + 1):
            if mutations.new_txn_id_on_retry:
                txn = uuid.uuid4().hex  # the mutation: each try is a new event to the homeserver
            try:
                if self._config.send_in_the_clear:  # the E2EE test-only mutation
                    resp: Any = await send_in_the_clear(self.client, room_id, event_type, content)
                else:
                    # Trust on first use: room keys go to every device of the room's members (qa.kernel.e2ee, README),
                    # unless roomKeys: verified withholds them from unverified devices (qa.agent.verification).
                    resp = await self.client.room_send(
                        room_id, event_type, content, tx_id=txn,
                        ignore_unverified_devices=self.e2ee.before_send(self.client, room_id))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                resp, status, error = None, None, f"{type(exc).__name__}: {exc}"
            else:
                if not isinstance(resp, RoomSendError):
                    if event_type == "m.room.message":
                        self.sent[resp.event_id] = (room_id, thread_root)
                    return str(resp.event_id)
                status = getattr(getattr(resp, "transport_response", None), "status", None)
                error = f"{resp.status_code or ''} {resp.message}".strip()
            retryable = resp is None or status in (429, 502, 503, 504) or resp.status_code == "M_LIMIT_EXCEEDED"
            asked = (resp.retry_after_ms / 1000) if resp is not None and resp.retry_after_ms else None
            if not retryable or tries == SEND_ATTEMPTS or (asked or 0) > MAX_RETRY_AFTER_S:
                self._trace.emit("error", where=f"send {event_type}", roomId=room_id, status=status, error=error,
                                 tries=tries, txnId=txn)
                if mutations.crash_on_send_error:
                    raise SystemExit(3)  # the mutation: a refused send takes the whole bot down
                return None
            delay = RETRY_DELAYS_S[min(tries - 1, len(RETRY_DELAYS_S) - 1)]
            if asked is not None and not mutations.ignore_retry_after:
                delay = asked
            self._trace.emit("send.retry", roomId=room_id, eventType=event_type, status=status, error=error,
                             tries=tries, txnId=txn, retryInMs=round(delay * 1000))
            await asyncio.sleep(delay)  # pacing the homeserver asked for, not a synchronization
        return None
