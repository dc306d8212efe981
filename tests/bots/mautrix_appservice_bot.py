#!/usr/bin/env python3
"""An application-service bot (mautrix-python's appservice module + the openai SDK) that knows nothing about
matrix-qa's insides.

The homeserver pushes it transactions on its port; it joins every room its user is invited to, and answers each
text message that mentions its user: a reply, in the message's thread when it has one, with what the model says
(one conversation per room and thread, in memory).

Launch contract (environment only):
  MATRIX_QA_APPSERVICE_REGISTRATION   its registration file (id, as_token, hs_token, url, namespaces)
  MATRIX_QA_USER_ID                   its user (inside the registration's namespace); it acts as this user
  MATRIX_QA_HOMESERVER_URL            the homeserver
  MATRIX_QA_MODEL                     model name; OPENAI_BASE_URL / OPENAI_API_KEY go to the SDK
  --port PORT                         where it listens for the homeserver's transactions

`--bug answer-unmentioned` answers every message, mentioned or not (the bug the mention scenarios catch).
`--bug answer-outside-namespace` answers as another user of the homeserver's registration, one outside the
namespace of the registration it was handed (`outsider`): its own user invites that user, which joins and answers.
The homeserver lets its as_token act for that user, so only a check of who answered catches it.
`--bug no-txn-dedupe` forgets the transaction ids it has handled (mautrix remembers them, and answers a transaction
it has seen with 200 and nothing more), so a transaction the homeserver sends again is handled again: a mention
in it is answered twice.
`--bug redelivered-late` forgets them too, and handles a message it has already taken only after the next new
message's answer is sent (a service whose tasks run out of order): its second answer comes after a later answer.
`--bug redelivered-at-stop` forgets them too, and answers a message it has already taken only when it is told to
stop (a queue drained on shutdown): no step can see that answer while it runs, only the room as the bot left it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai
import yaml
from mautrix.appservice import AppService
from mautrix.types import EventType, RoomID, UserID

log = logging.getLogger("mautrix_appservice_bot")
BUGS = {"answer-unmentioned": "answers every message, mentioned or not",
        "answer-outside-namespace": "answers as a user outside the namespace it was given",
        "no-txn-dedupe": "handles a transaction sent again (the same id) as if it were new",
        "redelivered-late": "handles a transaction sent again as new, after the next new message is answered",
        "redelivered-at-stop": "handles a transaction sent again as new, when it is told to stop"}


class ConfigError(Exception):
    """A missing or malformed launch-contract value: one line, exit code 2."""


@dataclass(frozen=True)
class Settings:
    homeserver: str
    user_id: str
    registration: dict[str, Any]
    port: int
    model: str

    @property
    def domain(self) -> str:
        return self.user_id.split(":", 1)[1]


def settings_from(env: Mapping[str, str], port: int) -> Settings:
    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    path = required("MATRIX_QA_APPSERVICE_REGISTRATION")
    try:
        with open(path, encoding="utf-8") as fh:
            registration = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the registration {path}: {exc}") from None
    missing = [k for k in ("id", "as_token", "hs_token", "sender_localpart") if not isinstance(
        (registration or {}).get(k), str)]
    if missing:
        raise ConfigError(f"the registration {path} lacks {', '.join(missing)}")
    user_id = required("MATRIX_QA_USER_ID")
    if ":" not in user_id:
        raise ConfigError(f"MATRIX_QA_USER_ID {user_id!r} is not a Matrix user id")
    return Settings(required("MATRIX_QA_HOMESERVER_URL"), user_id, registration, port, required("MATRIX_QA_MODEL"))


# --- pure decisions -----------------------------------------------------------------------------------------


def mentioned(content: Mapping[str, Any], user_id: str) -> bool:
    """m.mentions decides when the client sent it; a legacy client's body naming the full id otherwise."""
    mentions = content.get("m.mentions")
    if mentions is None:
        return user_id in str(content.get("body", ""))
    named = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
    return isinstance(named, list) and user_id in named


def for_the_bot(event: Mapping[str, Any], user_id: str, bug: str | None = None) -> bool:
    """A text message from someone else that mentions the bot's user, not an edit."""
    content = event.get("content")
    if event.get("type") != "m.room.message" or event.get("sender") == user_id or not isinstance(content, Mapping):
        return False
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        return False
    return content.get("msgtype") == "m.text" and (bug == "answer-unmentioned" or mentioned(content, user_id))


def invites_me(event: Mapping[str, Any], user_id: str) -> bool:
    return (event.get("type") == "m.room.member" and event.get("state_key") == user_id
            and (event.get("content") or {}).get("membership") == "invite")


def thread_root(event: Mapping[str, Any]) -> str | None:
    relates = (event.get("content") or {}).get("m.relates_to")
    return relates.get("event_id") if isinstance(relates, Mapping) and relates.get("rel_type") == "m.thread" \
        else None


def outsider(user_id: str) -> str:
    """The user `answer-outside-namespace` speaks as: `@mqa_as-1a2b3c4d-bot:hs` -> `@mqa_as-stray-1a2b3c4d-bot:hs`,
    a user the registration's as_token may act for (its first localpart segment is the registration's) but outside
    the sub-namespace `mqa_as-1a2b3c4d-` this service was given."""
    localpart, server = user_id[1:].split(":", 1)
    head, sep, rest = localpart.partition("-")
    return f"@{head}{sep or '-'}stray-{rest}:{server}"


def reply_content(text: str, trigger: Mapping[str, Any]) -> dict[str, Any]:
    """A reply to `trigger`; in its thread when it is in one (the spec's fallback shape)."""
    relates: dict[str, Any] = {"m.in_reply_to": {"event_id": trigger["event_id"]}}
    root = thread_root(trigger)
    if root:
        relates = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, **relates}
    return {"msgtype": "m.text", "body": text, "m.mentions": {}, "m.relates_to": relates}


class Forgetful(set):  # type: ignore[type-arg]
    """A set of transaction ids that never holds one: mautrix's check of a seen id always misses."""

    def add(self, _item: Any) -> None:
        return None


# --- the service ----------------------------------------------------------------------------------------------


class Bot:
    def __init__(self, s: Settings, bug: str | None) -> None:
        reg = s.registration
        self.s, self.bug = s, bug
        self.appservice = AppService(server=s.homeserver, domain=s.domain, as_token=reg["as_token"],
                                     hs_token=reg["hs_token"], bot_localpart=reg["sender_localpart"], id=reg["id"],
                                     log=log)
        self.model = openai.AsyncOpenAI(max_retries=0, timeout=120.0)
        self.histories: dict[tuple[str, str | None], list[dict[str, str]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.appservice.matrix_event_handler(self.on_event)
        if bug in ("no-txn-dedupe", "redelivered-late", "redelivered-at-stop"):
            self.appservice.transactions = Forgetful()
        # redelivered-late/-at-stop: the messages taken before (by event id), and the repeats kept for later.
        self.taken: set[str] = set()
        self.repeats: list[tuple[str, Mapping[str, Any]]] = []

    @property
    def me(self) -> Any:
        # The registration's namespace is ours: act as our user (the spec's ?user_id= assertion).
        return self.appservice.intent.user(UserID(self.s.user_id))

    async def on_event(self, evt: Any) -> None:
        event = evt.serialize()
        event.setdefault("type", str(evt.type))
        if evt.type == EventType.ROOM_MEMBER and invites_me(event, self.s.user_id):
            log.info("invited to %s; joining", evt.room_id)
            await self.me.join_room(RoomID(evt.room_id))
        elif evt.type == EventType.ROOM_MESSAGE and for_the_bot(event, self.s.user_id, self.bug):
            if self.bug in ("redelivered-late", "redelivered-at-stop") and event.get("event_id") in self.taken:
                self.repeats.append((str(evt.room_id), event))
                return
            self.taken.add(str(event.get("event_id")))
            self.spawn(self.answer(str(evt.room_id), event))

    def spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, room_id: str, event: Mapping[str, Any]) -> None:
        history = self.histories.setdefault((room_id, thread_root(event)), [])
        question = str(event["content"].get("body", ""))
        try:
            result = await self.model.chat.completions.create(
                model=self.s.model, messages=[*history, {"role": "user", "content": question}])  # type: ignore
            text = (result.choices[0].message.content if result.choices else None) or "(no answer)"
        except openai.OpenAIError as exc:
            text = f"(the model failed: {type(exc).__name__})"
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        speaker = self.me
        if self.bug == "answer-outside-namespace":
            speaker = self.appservice.intent.user(UserID(outsider(self.s.user_id)))
            await speaker.ensure_joined(RoomID(room_id), bot=self.me)  # registers it, and our user invites it
        await speaker.send_message_event(RoomID(room_id), EventType.ROOM_MESSAGE, reply_content(text, event))
        if self.bug != "redelivered-late":
            return
        # redelivered-late: another message is answered, so now the repeats taken before it, each answered again.
        due = [(room, e) for room, e in self.repeats if e.get("event_id") != event.get("event_id")]
        self.repeats = [(room, e) for room, e in self.repeats if e.get("event_id") == event.get("event_id")]
        for room, repeated in due:
            self.spawn(self.answer(room, repeated))

    async def run(self, stop: asyncio.Event) -> None:
        await self.appservice.start(host="127.0.0.1", port=self.s.port)
        print(f"listening on {self.s.port} as {self.s.user_id}", flush=True)
        try:
            await stop.wait()
            if self.bug == "redelivered-at-stop":  # the queue drained on shutdown, each repeat answered again
                await asyncio.gather(*self.tasks, return_exceptions=True)
                await asyncio.gather(*(self.answer(room, e) for room, e in self.repeats), return_exceptions=True)
        finally:
            await self.appservice.stop()
            await self.model.close()


async def main_async(s: Settings, bug: str | None) -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await Bot(s, bug).run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Matrix application-service bot answering mentions.")
    parser.add_argument("--port", type=int, required=True, help="where the homeserver's transactions arrive")
    parser.add_argument("--bug", choices=sorted(BUGS), help="turn on one deliberate defect")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = settings_from(os.environ, args.port)
    except ConfigError as exc:
        print(f"mautrix_appservice_bot: {exc}", file=sys.stderr)
        return 2
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    return asyncio.run(main_async(settings, args.bug))


if __name__ == "__main__":
    sys.exit(main())
