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
from qa.agent.thread_history import MAX_MESSAGES, first_turn_of_thread, history_records
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


class TurnIO:
    def __init__(self, config: AgentConfig, trace: Trace, post: PostContent, relation_for: RelationFor,
                 credentials: Callable[[], tuple[str, str]]) -> None:
        self._config = config
        self._trace = trace
        self._post = post
        self._relation_for = relation_for
        self._credentials = credentials  # (homeserver URL, access token), read when a download starts

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
        """The thread's earlier messages when this is the session's first turn (qa.agent.thread_history);
        empty at the top level, on later turns, on a fetch error (traced), and under `no-thread-history`."""
        if thread_root is None or not first_turn_of_thread(records, inbound.event_id) \
                or self._config.mutated("no-thread-history"):
            return []
        homeserver, token = self._credentials()
        try:
            root, events = await fetch_thread(homeserver, token, room_id, thread_root)
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
            self._trace.emit("error", where="thread.history", session=session, attempt=attempt, error=str(exc))
            return []
        known = {str(r.get("eventId")) for r in records if r.get("eventId")}
        found = history_records(events, root, inbound.event_id, self._config.user_id, known)
        self._trace.emit("thread.history", session=session, attempt=attempt, root=thread_root, messages=len(found))
        return found
