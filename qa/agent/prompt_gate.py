"""Which accepted messages end their turn before any model call (the skipped-prompt path). Pure.

A mention is how a message reaches the bot, not part of the request: "bot: " in front is stripped first. What
is left may be empty (nothing to ask the model) or a command the bot answers itself (`!ping`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Commands answered locally, without the model: name -> reply.
LOCAL_COMMANDS = {"!ping": "pong"}


@dataclass(frozen=True)
class Skip:
    reason: str  # "empty" | "command"
    reply: str | None  # what the bot sends instead of a model answer, if anything


def strip_mention(body: str, bot_user_id: str | None) -> str:
    """The body without a leading mention of the bot ("@bot:hs: ", "bot: ", "bot, ")."""
    if not bot_user_id:
        return body.strip()
    localpart = bot_user_id.lstrip("@").split(":", 1)[0]
    names = sorted({re.escape(bot_user_id), "@?" + re.escape(localpart)}, key=len, reverse=True)
    pattern = rf"^\s*(?:{'|'.join(names)})\s*[:,]\s*"
    return re.sub(pattern, "", body, count=1, flags=re.IGNORECASE).strip()


def skip_for(body: str, bot_user_id: str | None) -> Skip | None:
    prompt = strip_mention(body, bot_user_id)
    if not prompt:
        return Skip("empty", None)
    command = prompt.lower()
    return Skip("command", LOCAL_COMMANDS[command]) if command in LOCAL_COMMANDS else None
