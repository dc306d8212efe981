#!/usr/bin/env python3
"""A Matrix reply bot on the OpenAI Responses API (matrix-nio callbacks + the openai SDK), written without matrix-qa
in mind: it knows its environment, Matrix and its model, nothing else.

Each conversation (a room's top level, or one thread) continues on the model's side: the bot keeps only the id of
the last response and sends `previous_response_id` with the next message, as the Responses API intends. Answers are
streamed (`client.responses.stream`) unless `--no-stream`.

Environment: MATRIX_QA_HOMESERVER_URL, MATRIX_QA_USER_ID, MATRIX_QA_ACCESS_TOKEN + MATRIX_QA_DEVICE_ID (or
MATRIX_QA_PASSWORD), MATRIX_QA_ROOM_IDS, MATRIX_QA_STATE_DIR, MATRIX_QA_MODEL; the SDK reads OPENAI_BASE_URL and
OPENAI_API_KEY. `--trace-locks` writes `lock.acquire`/`lock.release` records around each session-file write to
$MATRIX_QA_TRACE_FILE. `--bug NAME` turns on a deliberate defect (BUGS).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import openai
from nio import AsyncClient, InviteMemberEvent, MatrixRoom, RoomMessageText, SyncResponse, WhoamiError

log = logging.getLogger("responses_reply_bot")

BUGS = {"answer-unmentioned": "answers every text message, mentioned or not",
        "thread-top-level": "answers threaded messages at the top level (m.in_reply_to only, no m.thread)"}
INSTRUCTIONS = "You are a helpful assistant in a Matrix chat room. Answer briefly."
SORRY = "Sorry, the model did not answer."


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise SystemExit(f"responses_reply_bot: {name} is not set")
    return value


def mentioned(content: dict[str, Any], me: str) -> bool:
    mentions = content.get("m.mentions")
    if not isinstance(mentions, dict):
        return me in str(content.get("body", ""))  # a client without m.mentions: the id in the body is all there is
    return me in (mentions.get("user_ids") or [])


def thread_of(content: dict[str, Any]) -> str | None:
    relation = content.get("m.relates_to") or {}
    return relation.get("event_id") if relation.get("rel_type") == "m.thread" else None


class Sessions:
    """The last response id and the answered events of each conversation, one JSON file each."""

    def __init__(self, directory: Path, trace: str | None) -> None:
        self.directory = directory / "conversations"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.trace = Path(trace) if trace else None

    def path(self, room_id: str, root: str | None) -> Path:
        return self.directory / (hashlib.sha256(f"{room_id}|{root}".encode()).hexdigest()[:20] + ".json")

    def load(self, room_id: str, root: str | None) -> dict[str, Any]:
        path = self.path(room_id, root)
        return json.loads(path.read_text()) if path.exists() else {"previous": None, "answered": []}

    def save(self, room_id: str, root: str | None, state: dict[str, Any], event_id: str) -> None:
        path = self.path(room_id, root)
        self._trace("lock.acquire", path.stem, event_id)
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").replace(path)
        self._trace("lock.release", path.stem, event_id)

    def _trace(self, kind: str, session: str, attempt: str) -> None:
        if self.trace is not None:
            record = {"t": round(time.monotonic_ns() / 1e6, 3), "type": kind, "session": session,
                      "attempt": attempt, "purpose": "session-write"}
            with self.trace.open("a") as out:
                out.write(json.dumps(record) + "\n")


class Bot:
    def __init__(self, model: openai.AsyncOpenAI, bug: str | None, stream: bool, trace: str | None) -> None:
        self.me = env("MATRIX_QA_USER_ID")
        self.rooms = [r for r in env("MATRIX_QA_ROOM_IDS", ",").split(",") if r]
        self.state = Path(env("MATRIX_QA_STATE_DIR"))
        self.model_name = env("MATRIX_QA_MODEL")
        self.model = model
        self.bug = bug
        self.stream = stream
        self.sessions = Sessions(self.state, trace)
        self.matrix = AsyncClient(env("MATRIX_QA_HOMESERVER_URL"), self.me,
                                  device_id=os.environ.get("MATRIX_QA_DEVICE_ID") or None)
        self.ready = False

    async def start(self) -> None:
        token = os.environ.get("MATRIX_QA_ACCESS_TOKEN")
        if token:
            self.matrix.restore_login(self.me, os.environ.get("MATRIX_QA_DEVICE_ID", ""), token)
            if isinstance(await self.matrix.whoami(), WhoamiError):
                raise SystemExit("responses_reply_bot: the access token was refused")
        else:
            await self.matrix.login(env("MATRIX_QA_PASSWORD"), device_name="responses-reply-bot")
        for room_id in self.rooms:
            await self.matrix.join(room_id)
        position = self.state / "next_batch"
        if position.exists():
            self.matrix.next_batch = position.read_text().strip()
        else:
            # First start ever: what the rooms already hold is not for us.
            await self.matrix.sync(timeout=0, full_state=True)
        self.matrix.add_event_callback(self.on_message, RoomMessageText)
        self.matrix.add_event_callback(self.on_invite, InviteMemberEvent)
        self.matrix.add_response_callback(self.on_sync, SyncResponse)
        await self.matrix.sync_forever(timeout=30_000, full_state=not position.exists())

    async def on_sync(self, response: SyncResponse) -> None:
        (self.state / "next_batch").write_text(response.next_batch)  # every message of the batch is answered
        if not self.ready and all(r in self.matrix.rooms for r in self.rooms):
            self.ready = True
            print(f"ready as {self.me}", flush=True)

    async def on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if room.room_id in self.rooms and event.state_key == self.me:
            await self.matrix.join(room.room_id)

    async def on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        content = event.source.get("content") or {}
        if event.sender == self.me or content.get("msgtype") != "m.text" or room.room_id not in self.rooms:
            return
        if (content.get("m.relates_to") or {}).get("rel_type") == "m.replace":
            return
        if self.bug != "answer-unmentioned" and not mentioned(content, self.me):
            return
        root = thread_of(content)
        state = self.sessions.load(room.room_id, root)
        if event.event_id in state["answered"]:
            return
        answer, response_id = await self.ask(event.body, state["previous"])
        relation: dict[str, Any] = {"m.in_reply_to": {"event_id": event.event_id}}
        if root and self.bug != "thread-top-level":
            relation = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, **relation}
        reply = {"msgtype": "m.text" if answer else "m.notice", "body": answer or SORRY, "m.mentions": {},
                 "m.relates_to": relation}
        await self.matrix.room_send(room.room_id, "m.room.message", reply)
        state["answered"].append(event.event_id)
        state["previous"] = response_id or state["previous"]
        self.sessions.save(room.room_id, root, state, event.event_id)

    async def ask(self, text: str, previous: str | None) -> tuple[str | None, str | None]:
        request: dict[str, Any] = {"model": self.model_name, "instructions": INSTRUCTIONS,
                                   "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}
        if previous:
            request["previous_response_id"] = previous
        try:
            if self.stream:
                async with self.model.responses.stream(**request) as events:
                    response = await events.get_final_response()
            else:
                response = await self.model.responses.create(**request)
        except Exception as exc:  # any failure of the model call: the room gets a short notice, the bot goes on
            log.error("model request failed: %s", type(exc).__name__)
            return None, None
        return response.output_text or None, response.id


def warm_up() -> None:
    """Pay once what the SDK's first answer costs. Optional: for a process that imports this module and then forks
    the bot (a fork server; with matrix-qa, `fork_server: {preload: ["responses_reply_bot:warm_up"]}`), so every
    forked bot starts with it paid. The openai SDK builds its pydantic models' validators on first use, and the first
    streamed answer needs the big stream-event union: 1.3-2.2 CPU-seconds, in every bot process otherwise.

    One canned answer, streamed and plain, through the SDK's own client and parsers, answered in memory (a mock
    transport: no socket, no thread, no event loop is left behind in the parent)."""
    import httpx2  # the HTTP client this openai release is built on

    message = {"id": "msg_0", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}]}
    done = {"id": "resp_0", "object": "response", "created_at": 0, "model": "warm-up", "status": "completed",
            "output": [message], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    started = {**done, "status": "in_progress", "output": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    at = {"output_index": 0, "item_id": "msg_0", "content_index": 0}
    events = [("response.created", {"response": started}), ("response.in_progress", {"response": started}),
              ("response.output_item.added", {"output_index": 0, "item": {**message, "status": "in_progress",
                                                                           "content": []}}),
              ("response.content_part.added", {**at, "part": part}),
              ("response.output_text.delta", {**at, "delta": "ok", "logprobs": []}),
              ("response.output_text.done", {**at, "text": "ok", "logprobs": []}),
              ("response.content_part.done", {**at, "part": {**part, "text": "ok"}}),
              ("response.output_item.done", {"output_index": 0, "item": message}),
              ("response.completed", {"response": done})]
    sse = "".join(f"event: {kind}\ndata: {json.dumps({'type': kind, **fields, 'sequence_number': n})}\n\n"
                  for n, (kind, fields) in enumerate(events))

    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, text=sse)
        return httpx2.Response(200, json=done)

    http = openai.DefaultHttpxClient(transport=httpx2.MockTransport(answer))
    with openai.OpenAI(api_key="warm-up", base_url="http://warm-up.invalid/v1", max_retries=0,
                       http_client=http) as client:
        request: dict[str, Any] = {"model": "warm-up", "instructions": INSTRUCTIONS, "input": "warm-up"}
        with client.responses.stream(**request) as events_seen:
            events_seen.get_final_response()
        client.responses.create(**request)


async def main_async(bug: str | None, stream: bool, trace_locks: bool) -> int:
    model = openai.AsyncOpenAI(max_retries=0, timeout=120)
    bot = Bot(model, bug, stream, os.environ.get("MATRIX_QA_TRACE_FILE") if trace_locks else None)
    runner = asyncio.create_task(bot.start())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    runner.cancel()
    stopper.cancel()
    await bot.matrix.close()
    await model.close()
    return 0 if stop.is_set() else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="A Matrix reply bot on the OpenAI Responses API.")
    parser.add_argument("--bug", choices=sorted(BUGS))
    parser.add_argument("--no-stream", action="store_true", help="ask for plain answers, not streamed ones")
    parser.add_argument("--trace-locks", action="store_true", help="trace session-file writes as lock holds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("nio").setLevel(logging.WARNING)
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    return asyncio.run(main_async(args.bug, not args.no_stream, args.trace_locks))


if __name__ == "__main__":
    sys.exit(main())
