"""Which recorded exchange answers a request, and when none does, which one came nearest and how they differ.

A request matches a recorded exchange when, after placeholders (qa.provider.placeholders), the two say the same
thing to the model: API, model, stream flag, every message, every tool. Order counts within a session (one
conversation of the bot: a room's top level or a thread): a request may match only an exchange after the last
one its session used, so a bot that asks again what it already asked, or in another order, does not replay.
Sessions interleave freely, as they do when a bot answers two rooms at once.

Pure: no I/O.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import yaml

from qa.provider.cassette import Exchange
from qa.provider.placeholders import Placeholders
from qa.shared.replay_miss import Miss

# What of a message the model reads; anything else a client adds (its own bookkeeping) does not change the answer.
_MESSAGE_KEYS = ("role", "name", "content", "tool_calls", "tool_call_id")
_CALL_KEYS = ("id", "type", "function")


def canonical_request(body: dict[str, Any], placeholders: Placeholders, api: str = "chat") -> dict[str, Any]:
    """The request as the model saw it, templated: what a cassette stores and what matching compares. `body` is a
    Chat Completions body (another API's request in the common view, qa.provider.apis.base.ParsedRequest.chat_body);
    any other API is named first, so a request never matches an exchange of another API."""
    messages = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        kept = {k: message[k] for k in _MESSAGE_KEYS if message.get(k) is not None}
        if isinstance(kept.get("tool_calls"), list):
            kept["tool_calls"] = [{k: c[k] for k in _CALL_KEYS if k in c} if isinstance(c, dict) else c
                                  for c in kept["tool_calls"]]
        messages.append(kept)
    request: dict[str, Any] = {"api": api} if api != "chat" else {}
    request |= {"model": body.get("model"), "stream": body.get("stream") is True, "messages": messages}
    if body.get("tools"):
        request["tools"] = body["tools"]
    return placeholders.template_data(request)


def session_of(request: dict[str, Any]) -> str:
    """A conversation's identity: its messages up to and including the first user message (the system prompt
    and what opened the room's top level or the thread). Later turns only add to a session's history."""
    opening = []
    for message in request.get("messages") or []:
        opening.append(message)
        if message.get("role") == "user":
            break
    digest = hashlib.sha256(json.dumps(opening, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest[:8]


class Matcher:
    """The exchanges of one scenario's cassette, consumed as this run's requests come."""

    def __init__(self, exchanges: Sequence[Exchange]) -> None:
        self.exchanges = list(exchanges)
        self._used: set[int] = set()
        self._next: dict[str, int] = {}  # session -> position after the last exchange it used

    def match(self, request: dict[str, Any]) -> Exchange | None:
        session = session_of(request)
        start = self._next.get(session, 0)
        for position in range(start, len(self.exchanges)):
            exchange = self.exchanges[position]
            if exchange.session == session and position not in self._used and exchange.request == request:
                self._used.add(position)
                self._next[session] = position + 1
                return exchange
        return None

    def miss(self, request: dict[str, Any], label: str) -> Miss:
        nearest = nearest_exchange(request, self.exchanges, self._used)
        diff = request_diff(nearest.request, request, f"{label} #{nearest.index}") if nearest else \
            ["(the cassette holds no exchanges)", *render(request)]
        return Miss(request=request, nearest=nearest, diff=diff)

    @property
    def unused(self) -> list[Exchange]:
        return [e for i, e in enumerate(self.exchanges) if i not in self._used]


def nearest_exchange(request: dict[str, Any], exchanges: Sequence[Exchange], used: set[int]) -> Exchange | None:
    """The recorded exchange most like `request`; unused ones first (the one the bot most likely meant), then
    the earliest among equals."""
    if not exchanges:
        return None
    mine = _similarity_text(request)

    def score(pair: tuple[int, Exchange]) -> tuple[int, float, int]:
        position, exchange = pair
        # By characters, not lines: a prompt with one word changed is one changed line, like any other prompt.
        ratio = difflib.SequenceMatcher(None, _similarity_text(exchange.request), mine, autojunk=False).ratio()
        return (position not in used, ratio, -position)

    return max(enumerate(exchanges), key=score)[1]


# The comparison is quadratic in the worst case; the end of a conversation (its newest turns) is what differs.
_SIMILARITY_CHARS = 20_000


def _similarity_text(request: dict[str, Any]) -> str:
    return "\n".join(render(request))[-_SIMILARITY_CHARS:]


def render(request: dict[str, Any]) -> list[str]:
    """A request as the lines a diff compares: YAML, keys in a fixed order, one message field per line."""
    text = yaml.safe_dump(request, sort_keys=False, allow_unicode=True, width=100_000, default_flow_style=False)
    return text.splitlines()


def request_diff(recorded: dict[str, Any], new: dict[str, Any], label: str) -> list[str]:
    return list(difflib.unified_diff(render(recorded), render(new), fromfile=f"recorded ({label})",
                                     tofile="this run", lineterm="", n=2))
