"""What a turn does besides talking to the model: its streaming preview, its message's attachment, and the
earlier messages of a thread it meets for the first time (qa.agent.thread_history decides which).

Kept out of qa.agent.turn so the turn protocol there stays readable; the turn asks this for a preview
(None when streaming is off) and for the prepared attachment (None for a text message).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from qa.agent.config import AgentConfig
from qa.agent.lock import LockHold, SessionWriteLock
from qa.agent.media import Prepared, fetch, prepare
from qa.agent.policy import Inbound
from qa.agent.streaming import Preview
from qa.agent.thread_history import MAX_MESSAGES, first_turn_of_thread, history_anchor, history_records
from qa.kernel.trace import Trace

# (room_id, content, thread_root) -> event id or None
PostContent = Callable[[str, dict[str, Any], str | None], Awaitable[str | None]]
# (thread_root, in_reply_to) -> the relation a reply carries (None at the top level)
RelationFor = Callable[[str | None, str | None], dict[str, Any] | None]


FETCH_TIMEOUT_S = 10.0


async def fetch_thread(homeserver: str, access_token: str, room_id: str, root_id: str
                       ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(root event, the thread's events) as the homeserver has them; a part the server refuses is None or []."""
    base = f"{homeserver.rstrip('/')}/_matrix/client/v1/rooms/{quote(room_id)}"
    headers = {"Authorization": f"Bearer {access_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)) as http:
        async with http.get(f"{base}/relations/{quote(root_id)}/m.thread", headers=headers,
                            params={"limit": str(MAX_MESSAGES), "dir": "b"}) as resp:
            chunk = (await resp.json()).get("chunk", []) if resp.status == 200 else []
        root_url = f"{homeserver.rstrip('/')}/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(root_id)}"
        async with http.get(root_url, headers=headers) as resp:
            root = await resp.json() if resp.status == 200 else None
    return root, [e for e in chunk if isinstance(e, dict)]


MAX_THREADS_KEPT = 256  # threads whose fetched past is kept for their later turns; the oldest goes first


class TurnIO:
    def __init__(self, config: AgentConfig, trace: Trace, post: PostContent, relation_for: RelationFor,
                 credentials: Callable[[], tuple[str, str]]) -> None:
        self._config = config
        self._trace = trace
        self._post = post
        self._relation_for = relation_for
        self._credentials = credentials  # (homeserver URL, access token), read when a download starts
        # (room, thread root) -> the thread as fetched (root, events): its later turns reuse it. Bounded.
        self._threads: dict[tuple[str, str], tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}

    @property
    def abandons_on_tool_error(self) -> bool:
        return self._config.mutated("preview-abandoned-on-tool-error")

    def preview(self, room_id: str, thread_root: str | None, inbound: Inbound, session: str, attempt: str,
                lock: SessionWriteLock) -> Preview | None:
        config = self._config
        if config.streaming == "off":
            return None
        before = after = None
        if config.mutated("lock-while-streaming"):
            holds: list[LockHold] = []

            async def before() -> None:
                holds.append(await lock.acquire(attempt, "preview"))

            async def after() -> None:
                for hold in holds:
                    hold.release()

        async def send(content: dict[str, Any]) -> str | None:
            return await self._post(room_id, content, None)

        return Preview(
            config.streaming, send, self._trace, session=session, attempt=attempt,
            relates_to=self._relation_for(thread_root, inbound.event_id),
            interval_ms=config.stream_edit_interval_ms, tool_progress=config.tool_progress == "on",
            pings=config.mutated("preview-pings"), truncate_final=config.mutated("final-edit-truncated"),
            before_draft=before, after_stream=after, buffered=config.mutated("buffered-preview"),
        )

    async def attachment(self, inbound: Inbound, session: str, attempt: str) -> Prepared | None:
        att = inbound.media
        if att is None:
            return None
        config = self._config
        limit = None if config.mutated("no-media-size-limit") else config.media.max_bytes

        via: list[str] = []

        async def fetcher(a: Any) -> bytes:
            homeserver, token = self._credentials()
            return await fetch(homeserver, token, a, limit,
                               decrypt_encrypted=not config.mutated("encrypted-media-not-decrypted"), via=via,
                               fallback=not config.mutated("no-legacy-media-fallback"))

        self._trace.emit("media.fetch.start", session=session, attempt=attempt, eventId=inbound.event_id,
                         msgtype=att.msgtype, mimetype=att.mimetype, size=att.size, encrypted=att.encrypted is not None)
        prepared = await prepare(inbound.body, att, fetcher, limit,
                                 crash_on_unknown=config.mutated("crash-on-unknown-media"),
                                 forward_images=not config.mutated("image-not-forwarded"),
                                 failure_to_model=config.mutated("media-failure-to-model"))
        images = sum(1 for p in prepared.parts or [] if p.get("type") == "image_url")
        self._trace.emit("media.fetch.end", session=session, attempt=attempt, eventId=inbound.event_id,
                         outcome=prepared.outcome, images=images, **({"via": via[0]} if via else {}))
        return prepared

    async def thread_history(self, room_id: str, thread_root: str | None, records: list[dict[str, Any]],
                             inbound: Inbound, session: str, attempt: str) -> list[dict[str, Any]]:
        """The thread's messages from before the session's first recorded one (qa.agent.thread_history), on
        every turn of a thread the bot did not record from its root; empty at the top level, for a thread
        recorded from its root, on a fetch error (traced), and under `no-thread-history`. The test-only
        `thread-history-first-turn-only` gives them to the session's first turn only."""
        anchor = history_anchor(records, inbound.event_id, thread_root) if thread_root is not None else None
        if thread_root is None or anchor is None or self._config.mutated("no-thread-history") or (
                self._config.mutated("thread-history-first-turn-only")
                and not first_turn_of_thread(records, inbound.event_id)):
            return []
        key = (room_id, thread_root)
        fetched = key not in self._threads
        if fetched:
            homeserver, token = self._credentials()
            try:
                thread = await fetch_thread(homeserver, token, room_id, thread_root)
            except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
                self._trace.emit("error", where="thread.history", session=session, attempt=attempt, error=str(exc))
                return []
            if len(self._threads) >= MAX_THREADS_KEPT:
                self._threads.pop(next(iter(self._threads)))
            self._threads[key] = thread
        root, events = self._threads[key]
        known = {str(r.get("eventId")) for r in records if r.get("eventId")}
        found = history_records(events, root, anchor, self._config.user_id, known)
        self._trace.emit("thread.history", session=session, attempt=attempt, root=thread_root, messages=len(found),
                         fetched=fetched)
        return found
