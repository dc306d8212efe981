"""The mock provider's request journal: one entry per HTTP request, updated in place as it progresses, and waits on it.

An entry holds a model request in the common view (qa.provider.apis.base), whatever its API, so everything that
reads the journal (pairing by journal, `expect_model_request`, the lock evidence's model I/O, fault evidence)
reads every API alike; `api` says which one it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from qa.provider import apis
from qa.provider.apis.base import STREAM_PIECES
from qa.provider.rules import ErrorReply, Reply, content_text, image_count

EntryState = Literal["in_flight", "done"]


@dataclass
class JournalEntry:
    id: str
    method: str
    path: str
    started_at: float
    state: EntryState = "in_flight"
    model: str | None = None
    stream: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    rule: str | None = None
    unmatched: bool = False  # a model request no rule matched, answered with the fallback text
    reply: Reply | None = None
    error: ErrorReply | None = None
    status: int | None = None
    finished_at: float | None = None
    latency_ms: int = 0
    hold: str | None = None
    held_ms: float | None = None
    hold_end: str | None = None  # released | ran out (its rule's hold_ms) | client gone | stopped
    client_disconnected: bool = False
    pieces: int = STREAM_PIECES
    chunk_delay_ms: int = 0
    fault: str | None = None  # the fault served on purpose (an error, a broken stream, a hang), in words

    @property
    def api(self) -> str | None:
        """The model API of the request (`chat`, `responses`, `anthropic`); None for anything else (a model list)."""
        found = apis.for_path(self.path)
        return found.name if found is not None else None

    @property
    def images(self) -> int:
        """Image content parts across the request's messages: evidence that an image reached the model."""
        return sum(image_count(m.get("content")) for m in self.messages)

    @property
    def is_chat(self) -> bool:
        """A model request, whatever its API (the name is older than the other APIs)."""
        return self.api is not None

    @property
    def latest_user(self) -> str | None:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return None

    def texts(self) -> list[str]:
        """Every text the request carried: message contents and the arguments of earlier tool calls."""
        out: list[str] = []
        for message in self.messages:
            out.append(content_text(message.get("content")))
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    out.append(str(call["function"].get("arguments", "")))
        return out

    def contains(self, text: str) -> bool:
        return any(text in t for t in self.texts())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "api": self.api,
            "state": self.state,
            "status": self.status,
            "model": self.model,
            "stream": self.stream,
            "messages": [without_image_bytes(m) for m in self.messages],
            "images": self.images,
            "tools": self.tools,
            "rule": self.rule,
            "unmatched": self.unmatched,
            "reply": self.reply.to_json() if self.reply is not None else None,
            "error": (self.error.body()["error"] | {"status": self.error.status}) if self.error else None,
            "startedAt": round(self.started_at, 3),
            "finishedAt": round(self.finished_at, 3) if self.finished_at is not None else None,
            "latencyMs": self.latency_ms,
            "hold": self.hold,
            "heldMs": round(self.held_ms, 3) if self.held_ms is not None else None,
            "holdEnd": self.hold_end,
            "clientDisconnected": self.client_disconnected,
            "fault": self.fault,
        }

    def summary(self) -> str:
        latest = self.latest_user
        shown = "" if latest is None else f" latest user: {shorten(latest)!r}"
        rule = f" rule={self.rule}" if self.rule else (" unmatched" if self.unmatched else "")
        return f"{self.id} {self.method} {self.path} {self.state} status={self.status}{rule}{shown}"


def without_image_bytes(message: dict[str, Any]) -> dict[str, Any]:
    """A message for the journal file: data URLs shortened to their type and size, so no artifact holds media."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        url = part.get("image_url", {}).get("url") if isinstance(part, dict) and part.get("type") == "image_url" \
            and isinstance(part.get("image_url"), dict) else None
        if isinstance(url, str) and url.startswith("data:"):
            head = url.split(",", 1)[0]
            part = {**part, "image_url": {**part["image_url"], "url": f"{head},<{len(url) - len(head) - 1} chars>"}}
        parts.append(part)
    return {**message, "content": parts}


def shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Journal:
    """The entries, oldest first, and waits that wake on every change (a new entry, or one that progressed)."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        # Replaced on every change; waiters hold the old one, so no wake-up is ever lost.
        self._changed = asyncio.Event()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, test: Callable[[JournalEntry], bool], timeout: float, what: str,
                   loose: Callable[[JournalEntry], bool] | None = None) -> JournalEntry:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            changed = self._changed  # taken before the scan: a change during the scan sets this one
            for entry in self.entries:
                if test(entry):
                    return entry
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self.timeout_message(what, timeout, loose))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    def timeout_message(self, what: str, timeout: float, loose: Callable[[JournalEntry], bool] | None) -> str:
        lines = [f"mock provider: no {what} within {timeout:g}s; {len(self.entries)} request(s) seen"]
        lines += [f"  {e.summary()}" for e in self.entries[-20:]]
        if loose is not None:
            missed = [e.id for e in self.entries if e.state == "done" and e.is_chat and loose(e)]
            if missed:
                lines.append(f"  matching but already finished: {', '.join(missed)}")
        return "\n".join(lines)
