#!/usr/bin/env python3
"""A Matrix reply bot on Anthropic's Messages API (matrix-nio + the `anthropic` SDK), written without matrix-qa in
mind: it knows its environment, Matrix and its model, nothing else.

It keeps each conversation's history itself (a room's top level, or one thread: a JSON file per conversation) and
sends it whole with a system prompt; answers are streamed (`client.messages.stream`) unless `--no-stream`.

Environment: MATRIX_QA_HOMESERVER_URL, MATRIX_QA_USER_ID, MATRIX_QA_ACCESS_TOKEN + MATRIX_QA_DEVICE_ID (or
MATRIX_QA_PASSWORD), MATRIX_QA_ROOM_IDS, MATRIX_QA_STATE_DIR, MATRIX_QA_MODEL; the SDK reads ANTHROPIC_BASE_URL
and ANTHROPIC_API_KEY. `--trace-locks` writes `lock.acquire`/`lock.release` records around each history write to
$MATRIX_QA_TRACE_FILE. `--bug NAME` turns on a deliberate defect (BUGS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
from nio import AsyncClient, SyncError, WhoamiError

log = logging.getLogger("anthropic_reply_bot")

BUGS = {"answer-unmentioned": "answers every text message, mentioned or not",
        "thread-top-level": "answers threaded messages at the top level (m.in_reply_to only, no m.thread)"}
SYSTEM = "You are a helpful assistant in a Matrix chat room. Answer briefly."
SORRY = "Sorry, the model did not answer."
MAX_TOKENS = 512


def setting(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SystemExit(f"anthropic_reply_bot: {name} is not set")
    return value


def wants_me(event: dict[str, Any], me: str, *, anyone: bool = False) -> bool:
    """A text message someone else wrote, not an edit, and (unless `anyone`) one that mentions me."""
    content = event.get("content") or {}
    if event.get("type") != "m.room.message" or event.get("sender") == me or content.get("msgtype") != "m.text":
        return False
    if (content.get("m.relates_to") or {}).get("rel_type") == "m.replace":
        return False
    if anyone:
        return True
    mentions = content.get("m.mentions")
    return me in (mentions.get("user_ids") or []) if isinstance(mentions, dict) else me in str(content.get("body"))


class History:
    """One conversation's messages and the events already answered, in a file of its own."""

    def __init__(self, state: Path, room_id: str, root: str | None) -> None:
        name = hashlib.sha1(f"{room_id} {root or '-'}".encode()).hexdigest()[:16]
        self.path = state / "histories" / f"{name}.json"
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.messages: list[dict[str, str]] = data.get("messages", [])
        self.answered: list[str] = data.get("answered", [])

    def write(self, trace: Path | None, event_id: str) -> None:
        note(trace, "lock.acquire", self.path.stem, event_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"messages": self.messages, "answered": self.answered}))
        note(trace, "lock.release", self.path.stem, event_id)


def note(trace: Path | None, kind: str, session: str, attempt: str) -> None:
    if trace is not None:
        with trace.open("a") as out:
            out.write(json.dumps({"t": round(time.monotonic_ns() / 1e6, 3), "type": kind, "session": session,
                                  "attempt": attempt, "purpose": "session-write"}) + "\n")


class AnthropicBot:
    def __init__(self, model: anthropic.AsyncAnthropic, args: argparse.Namespace) -> None:
        self.me = setting("MATRIX_QA_USER_ID")
        self.rooms = {r for r in os.environ.get("MATRIX_QA_ROOM_IDS", "").split(",") if r}
        self.state = Path(setting("MATRIX_QA_STATE_DIR"))
        self.model_name = setting("MATRIX_QA_MODEL")
        self.model = model
        self.bug: str | None = args.bug
        self.stream = not args.no_stream
        self.trace = Path(os.environ["MATRIX_QA_TRACE_FILE"]) if args.trace_locks else None
        self.client = AsyncClient(setting("MATRIX_QA_HOMESERVER_URL"), self.me)

    async def log_in(self) -> None:
        token = os.environ.get("MATRIX_QA_ACCESS_TOKEN", "")
        if token:
            self.client.restore_login(self.me, os.environ.get("MATRIX_QA_DEVICE_ID", ""), token)
            if isinstance(await self.client.whoami(), WhoamiError):
                raise SystemExit("anthropic_reply_bot: the access token was refused")
        else:
            await self.client.login(setting("MATRIX_QA_PASSWORD"), device_name="anthropic-reply-bot")

    async def run(self) -> None:
        await self.log_in()
        for room_id in self.rooms:
            await self.client.join(room_id)
        saved = self.state / "sync.json"
        since = json.loads(saved.read_text())["since"] if saved.exists() else None
        catch_up = since is not None  # on the very first start, what the rooms already hold is history
        announced = False
        while True:
            # A process's first sync: at once, and with every joined room (so it knows it is in them all).
            response = await self.client.sync(timeout=0 if not announced else 30_000, since=since,
                                              full_state=not announced)
            if isinstance(response, SyncError):
                await asyncio.sleep(0.5)
                continue
            for room_id in response.rooms.invite:
                if room_id in self.rooms:
                    await self.client.join(room_id)
            for room_id, room in response.rooms.join.items():
                for event in room.timeline.events if catch_up and room_id in self.rooms else []:
                    await self.answer(room_id, event.source)
            since, catch_up = response.next_batch, True
            self.state.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps({"since": since}))
            if not announced and self.rooms <= set(response.rooms.join) | set(self.client.rooms):
                announced = True
                print(f"listening as {self.me}", flush=True)

    async def answer(self, room_id: str, event: dict[str, Any]) -> None:
        if not wants_me(event, self.me, anyone=self.bug == "answer-unmentioned"):
            return
        content = event["content"]
        relation = content.get("m.relates_to") or {}
        root = relation.get("event_id") if relation.get("rel_type") == "m.thread" else None
        history = History(self.state, room_id, root)
        if event["event_id"] in history.answered:
            return
        text = str(content.get("body", ""))
        reply = await self.ask([*history.messages, {"role": "user", "content": text}])
        relates: dict[str, Any] = {"m.in_reply_to": {"event_id": event["event_id"]}}
        if root and self.bug != "thread-top-level":
            relates = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, **relates}
        await self.client.room_send(room_id, "m.room.message", {
            "msgtype": "m.text" if reply else "m.notice", "body": reply or SORRY, "m.mentions": {},
            "m.relates_to": relates})
        if reply:
            history.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        history.answered.append(event["event_id"])
        history.write(self.trace, event["event_id"])

    async def ask(self, messages: list[dict[str, str]]) -> str | None:
        request: dict[str, Any] = {"model": self.model_name, "max_tokens": MAX_TOKENS, "system": SYSTEM,
                                   "messages": messages}
        try:
            if self.stream:
                async with self.model.messages.stream(**request) as events:
                    message = await events.get_final_message()
            else:
                message = await self.model.messages.create(**request)
        except Exception as exc:  # any failure of the model call: the room gets a short notice, the bot goes on
            log.error("model request failed: %s", type(exc).__name__)
            return None
        return "".join(block.text for block in message.content if block.type == "text") or None


async def main_async(args: argparse.Namespace) -> int:
    model = anthropic.AsyncAnthropic(max_retries=0, timeout=120)
    bot = AnthropicBot(model, args)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, done.set)
    task = asyncio.create_task(bot.run())
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
    await bot.client.close()
    await model.close()
    return 0 if done.is_set() else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="A Matrix reply bot on Anthropic's Messages API.")
    parser.add_argument("--bug", choices=sorted(BUGS))
    parser.add_argument("--no-stream", action="store_true", help="ask for plain answers, not streamed ones")
    parser.add_argument("--trace-locks", action="store_true", help="trace history writes as lock holds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("nio").setLevel(logging.WARNING)
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
