"""How a room event is shown as evidence: one line, with decrypted bodies left out. Pure."""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any

# Who the bot is: its one Matrix id, or every account it speaks with (a bot file's `accounts`, issue 33).
BotIds = str | Container[str]


@dataclass(frozen=True)
class BotIdentity:
    """The bot's accounts: the ones the harness made (`ids`), and any it registered itself, known by the localpart
    `prefix` its bot file declares (`registration_prefix`)."""

    ids: frozenset[str]
    prefix: str | None = None

    def __contains__(self, sender: object) -> bool:
        if sender in self.ids:
            return True
        return bool(self.prefix) and isinstance(sender, str) and sender.startswith(f"@{self.prefix}")

    def registered_name(self, sender: object) -> str | None:
        """The name a scenario gives an account the bot registered itself (`from: NAME`): its localpart after the
        prefix, up to the first character that is not [a-z0-9_] (`@rab-agent-1f2e:hs` is `agent`, so a bot may
        add a suffix to keep its accounts apart); None for any other sender, or one whose name is empty."""
        if sender in self.ids or sender not in self:
            return None
        rest = str(sender)[1 + len(str(self.prefix)):]
        return _NAME.match(rest).group(0) or None  # type: ignore[union-attr]  # the empty alternative always matches


# What `from:` can name (qa.scenario.steps.replies.ExpectReply.from_account): a letter, then [a-z0-9_].
_NAME = re.compile(r"[a-z][a-z0-9_]*|")


def is_bot_sender(sender: Any, bot: BotIds) -> bool:
    """A message from any of the bot's accounts is the bot's."""
    return sender == bot if isinstance(bot, str) else sender in bot


def describe_event(event: dict[str, Any]) -> str:
    content = event.get("content") or {}
    rel = content.get("m.relates_to") or {}
    parts = [event.get("type", "?"), f"from={event.get('sender')}", f"id={event.get('event_id')}"]
    if "body" in content and event.get("decrypted"):
        parts.append(f"body=<{len(str(content['body']))} chars, decrypted>")  # what E2EE protected stays out
    elif "body" in content:
        body = str(content["body"])
        parts.append(f"body={body[:80]!r}")
    if rel:
        others = {k: v for k, v in rel.items() if k != "m.in_reply_to"}
        if others:
            parts.append(f"relates_to={others}")
        target = (rel.get("m.in_reply_to") or {}).get("event_id") if isinstance(rel, dict) else None
        if target:
            parts.append(f"in_reply_to={target}")
    return " ".join(parts)


def strangers_messages(events: Iterable[dict[str, Any]], room_id: str, bot: BotIds, known: Container[str],
                       limit: int = 5) -> list[str]:
    """Messages in a room from an account that is neither the bot's nor one of the scenario's known users (its test
    users, a peer bot): an answer the bot sent as a user that is not its own shows up here, named by its sender, so
    a failed wait for the bot's reply says who answered instead (the last `limit` of them)."""
    lines = [
        f"room: {describe_event(e)} (from none of the bot's accounts)"
        for e in events
        if e.get("room_id") == room_id and e.get("type") == "m.room.message" and "state_key" not in e
        and not is_bot_sender(e.get("sender"), bot) and e.get("sender") not in known
    ]
    return lines[-limit:] if limit > 0 else []
