#!/usr/bin/env python3
"""A small Matrix reply bot (matrix-nio + the openai SDK) that knows nothing about matrix-qa.

It stands in for a "foreign" bot: the harness can only start it through the launch contract below, watch its
stdout for a readiness line, and judge it by what it does in Matrix and asks the model. It writes no trace.

Launch contract (environment only):
  MATRIX_QA_HOMESERVER_URL, MATRIX_QA_USER_ID   where and who
  MATRIX_QA_ACCESS_TOKEN + MATRIX_QA_DEVICE_ID  preferred login; else MATRIX_QA_PASSWORD
  MATRIX_QA_ROOM_IDS                            comma-separated rooms to join (and whose invites to accept)
  MATRIX_QA_STATE_DIR                           sync position and session histories, kept across restarts
  MATRIX_QA_MODEL                               model name; OPENAI_BASE_URL / OPENAI_API_KEY go to the SDK

`--config FILE` reads the same settings from an INI file instead ([matrix] homeserver, user_id, access_token,
device_id, password, rooms; [bot] state_dir, model), as a bot with its own config format would; the OpenAI
variables still come from the environment.

`--trace-locks` writes just two kinds of matrix-qa trace record to $MATRIX_QA_TRACE_FILE: `lock.acquire` and
`lock.release` around each write of a session file (a bot that traces its lock holds but not its model calls).

`--answer-all` answers every text message, mentioned or not, from people and bots alike (its own excepted): a bot
set up to talk in an open room, as the harness's peer bot is (docs/bot-file.md, "A peer bot"). It has no loop
guard of its own, on purpose: another bot's guard must end an exchange with it.

`--bug NAME` turns on one deliberate defect (see BUGS) so the harness can prove it catches that class of bug.
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from nio import AsyncClient, AsyncClientConfig, JoinError, LoginError, RoomSendError, SyncError, WhoamiError

log = logging.getLogger("nio_reply_bot")

BUGS = {
    "thread-top-level": "answers threaded messages at the top level (m.in_reply_to only, no m.thread)",
    "answer-unmentioned": "answers every text message, mentioned or not",
    "never-ready": "logs in, then never joins its rooms nor says it is syncing",
    "die-mid-turn": "is SIGKILLed (by itself, as the OOM killer would) while its model request is in flight",
    "lock-across-model": "holds its session-file lock while the model is thinking (with --trace-locks)",
    "escaping-helper": "starts a helper in a session of its own with a cleared environment, and leaves it running",
}
SYSTEM_PROMPT = "You are a helpful assistant in a Matrix chat room. Answer briefly."
FAILURE_TEXT = "Sorry, I could not get an answer from the model."
SYNC_TIMEOUT_MS = 30_000
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}  # catch-up after downtime arrives in one batch
MODEL_TIMEOUT_S = 120.0
RETRY_DELAYS_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # backoff while the homeserver is unreachable


class ConfigError(Exception):
    """A missing or malformed launch-contract variable: reported in one line, exit code 2."""


@dataclass(frozen=True)
class Settings:
    homeserver: str
    user_id: str
    password: str
    access_token: str
    device_id: str
    rooms: tuple[str, ...]
    state_dir: Path
    model: str


def settings_from_env(env: Mapping[str, str]) -> Settings:
    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    homeserver = required("MATRIX_QA_HOMESERVER_URL")
    user_id = required("MATRIX_QA_USER_ID")
    if not (user_id.startswith("@") and ":" in user_id):
        raise ConfigError(f"MATRIX_QA_USER_ID must look like @name:server, got {user_id!r}")
    token = env.get("MATRIX_QA_ACCESS_TOKEN", "").strip()
    password = env.get("MATRIX_QA_PASSWORD", "")
    if not token and not password:
        raise ConfigError("set MATRIX_QA_ACCESS_TOKEN (with MATRIX_QA_DEVICE_ID) or MATRIX_QA_PASSWORD")
    rooms = tuple(r.strip() for r in env.get("MATRIX_QA_ROOM_IDS", "").split(",") if r.strip())
    bad = [r for r in rooms if not r.startswith("!")]
    if bad:
        raise ConfigError(f"MATRIX_QA_ROOM_IDS: not a room id: {bad[0]!r}")
    return Settings(homeserver, user_id, password, token, env.get("MATRIX_QA_DEVICE_ID", "").strip(), rooms,
                    Path(required("MATRIX_QA_STATE_DIR")), required("MATRIX_QA_MODEL"))


INI_KEYS = {("matrix", "homeserver"): "MATRIX_QA_HOMESERVER_URL", ("matrix", "user_id"): "MATRIX_QA_USER_ID",
            ("matrix", "access_token"): "MATRIX_QA_ACCESS_TOKEN", ("matrix", "device_id"): "MATRIX_QA_DEVICE_ID",
            ("matrix", "password"): "MATRIX_QA_PASSWORD", ("matrix", "rooms"): "MATRIX_QA_ROOM_IDS",
            ("bot", "state_dir"): "MATRIX_QA_STATE_DIR", ("bot", "model"): "MATRIX_QA_MODEL"}


def settings_from_ini(path: Path) -> Settings:
    """The same settings from the bot's own config file: what a bot file's config_template renders."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values = {name: parser.get(section, key, fallback="") for (section, key), name in INI_KEYS.items()}
    return settings_from_env(values)


# --- pure decisions and shapes --------------------------------------------------------------------------------


def is_mention(content: Mapping[str, Any], bot_id: str) -> bool:
    mentions = content.get("m.mentions")
    if mentions is None:
        # Legacy clients send no m.mentions at all; then the full id in the body is the only signal there is.
        return bot_id in str(content.get("body", ""))
    # A client that sends m.mentions has said whom it meant: an id merely typed into the body is not a mention.
    user_ids = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
    return isinstance(user_ids, list) and bot_id in user_ids


def thread_root(content: Mapping[str, Any]) -> str | None:
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        return str(root) if root else None
    return None


def should_answer(event: Mapping[str, Any], bot_id: str, *, require_mention: bool = True) -> bool:
    if event.get("type") != "m.room.message" or event.get("sender") == bot_id:
        return False
    content = event.get("content")
    if not isinstance(content, Mapping) or content.get("msgtype") != "m.text":
        return False  # m.notice included: bots answering bots' notices is how loops start
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        return False  # an edit of something already seen
    return not require_mention or is_mention(content, bot_id)


def reply_content(text: str, trigger_id: str, root: str | None, *, msgtype: str = "m.text",
                  thread: bool = True) -> dict[str, Any]:
    relates: dict[str, Any] = {"m.in_reply_to": {"event_id": trigger_id}}
    if root and thread:
        relates = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, **relates}
    # An empty m.mentions: the reply pings nobody, not even the person it answers.
    return {"msgtype": msgtype, "body": text, "m.mentions": {}, "m.relates_to": relates}


def session_file(state_dir: Path, room_id: str, root: str | None) -> Path:
    # Room and event ids contain characters that are awkward in file names; a digest keeps sessions apart.
    digest = hashlib.sha256(f"{room_id}\0{root or ''}".encode()).hexdigest()[:24]
    return state_dir / "sessions" / f"{digest}.json"


# --- state on disk ------------------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a file


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


class Session:
    """One (room, thread root) conversation: the model's message history and the triggers already answered."""

    def __init__(self, path: Path, room_id: str, root: str | None) -> None:
        self.path = path
        data = read_json(path) or {}
        self.room_id = room_id
        self.root = root
        self.messages: list[dict[str, str]] = list(data.get("messages", []))
        self.answered: list[str] = list(data.get("answered", []))

    def record(self, trigger_id: str, user_text: str, reply: str | None) -> None:
        if reply is not None:
            self.messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": reply}]
        self.answered.append(trigger_id)
        write_json(self.path, {"room": self.room_id, "threadRoot": self.root, "messages": self.messages,
                               "answered": self.answered})


class LockTrace:
    """The two trace records this bot can write (docs/trace-format.md): holds of its session-file lock."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def emit(self, kind: str, session: str, attempt: str) -> None:
        if self.path is None:
            return
        import time

        record = {"t": round(time.monotonic_ns() / 1e6, 3), "type": kind, "session": session, "attempt": attempt,
                  "purpose": "session-write"}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


# --- the bot ------------------------------------------------------------------------------------------------


class ReplyBot:
    def __init__(self, settings: Settings, model_client: openai.AsyncOpenAI, bug: str | None,
                 locks: LockTrace | None = None, answer_all: bool = False) -> None:
        self.s = settings
        self.bug = bug
        self.answer_all = answer_all
        self.locks = locks or LockTrace(None)
        self.model_client = model_client
        self.token_path = settings.state_dir / "sync-token.json"
        self.joined: set[str] = set()
        self.client = AsyncClient(settings.homeserver, settings.user_id, device_id=settings.device_id or None,
                                  config=AsyncClientConfig(encryption_enabled=False,
                                                           request_timeout=SYNC_TIMEOUT_MS / 1000 + 15))

    async def login(self) -> None:
        if self.s.access_token:
            self.client.restore_login(self.s.user_id, self.s.device_id, self.s.access_token)
            who = await self.client.whoami()  # restore_login trusts the token blindly; ask the server
            if isinstance(who, WhoamiError):
                raise RuntimeError(f"the access token for {self.s.user_id} was refused: {who.message}")
            if not self.s.device_id and who.device_id:
                self.client.device_id = who.device_id
        else:
            resp = await self.client.login(self.s.password, device_name="nio-reply-bot")
            if isinstance(resp, LoginError):
                raise RuntimeError(f"password login as {self.s.user_id} failed: {resp.message}")
        log.info("logged in as %s (device %s)", self.s.user_id, self.client.device_id)

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        if isinstance(resp, JoinError):
            log.warning("could not join %s (yet): %s", room_id, resp.message)
        else:
            self.joined.add(room_id)
            log.info("joined %s", room_id)

    async def run(self) -> None:
        await self.login()
        if self.bug == "never-ready":
            await asyncio.Event().wait()  # until a signal cancels us
        for room_id in self.s.rooms:
            await self.join(room_id)
        saved = read_json(self.token_path)
        token: str | None = saved.get("next_batch") if isinstance(saved, dict) else None
        skip_history = token is None  # first start ever: what is already in the rooms is not for us
        ready = False
        first = True
        failures = 0
        while True:
            try:
                # The first sync after a start returns at once: with a saved position and nothing new it would
                # otherwise long-poll for 30 s before this bot could say it is syncing.
                resp = await self.client.sync(timeout=0 if first else SYNC_TIMEOUT_MS, since=token,
                                              full_state=token is None, sync_filter=SYNC_FILTER)
            except (TimeoutError, OSError) as exc:
                resp = SyncError(f"{type(exc).__name__}: {exc}")
            if isinstance(resp, SyncError):
                delay = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S) - 1)]
                failures += 1
                log.warning("sync failed (%s); retrying in %.1fs", resp.message, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            first = False
            for room_id in resp.rooms.invite:
                if room_id in self.s.rooms:
                    await self.join(room_id)
                else:
                    log.info("ignoring invite to %s", room_id)
            for room_id, room in resp.rooms.join.items():
                if room_id not in self.s.rooms or skip_history:
                    continue
                for event in room.timeline.events:
                    source = getattr(event, "source", None)
                    if isinstance(source, dict):
                        await self.handle(room_id, source)
            # Only now, with every reply of the batch sent, may the saved position move past it.
            token = resp.next_batch
            write_json(self.token_path, {"next_batch": token})
            skip_history = False
            self.joined.update(resp.rooms.join)
            if not ready and all(r in self.joined for r in self.s.rooms):
                ready = True
                print(f"syncing as {self.s.user_id}", flush=True)

    async def handle(self, room_id: str, event: dict[str, Any]) -> None:
        require_mention = not self.answer_all and self.bug != "answer-unmentioned"
        if not should_answer(event, self.s.user_id, require_mention=require_mention):
            return
        content = event["content"]
        trigger = str(event.get("event_id"))
        root = thread_root(content)
        session = Session(session_file(self.s.state_dir, room_id, root), room_id, root)
        if trigger in session.answered:
            return  # redelivered after a restart that came between our reply and the saved sync position
        body = str(content.get("body", ""))
        log.info("answering %s in %s (thread %s)", trigger, room_id, root)
        key = session.path.stem
        if self.bug == "lock-across-model":
            self.locks.emit("lock.acquire", key, trigger)  # the bug: held from here, across the model call
        if self.bug == "die-mid-turn":
            asking = asyncio.create_task(self.ask_model(session.messages, body))
            await asyncio.wait({asking}, timeout=0.2)  # the request is out; the answer (if slow) is not back
            os.kill(os.getpid(), signal.SIGKILL)
        reply = await self.ask_model(session.messages, body)
        thread = self.bug != "thread-top-level"
        if reply is None:
            out = reply_content(FAILURE_TEXT, trigger, root, msgtype="m.notice", thread=thread)
        else:
            out = reply_content(reply, trigger, root, thread=thread)
        sent = await self.client.room_send(room_id, "m.room.message", out)
        if isinstance(sent, RoomSendError):
            log.error("could not send the reply to %s: %s", trigger, sent.message)
            if self.bug == "lock-across-model":
                self.locks.emit("lock.release", key, trigger)
            return  # not recorded: a restart redelivers it and tries again
        if self.bug != "lock-across-model":
            self.locks.emit("lock.acquire", key, trigger)
        session.record(trigger, body, reply)
        self.locks.emit("lock.release", key, trigger)

    async def ask_model(self, history: list[dict[str, str]], text: str) -> str | None:
        messages: list[Any] = [{"role": "system", "content": SYSTEM_PROMPT}, *history,
                               {"role": "user", "content": text}]
        try:
            result = await self.model_client.chat.completions.create(model=self.s.model, messages=messages)
        except openai.OpenAIError as exc:
            log.error("model request failed: %s", type(exc).__name__)
            return None
        answer = result.choices[0].message.content if result.choices else None
        if not answer:
            log.error("model returned no text")
            return None
        return answer


async def main_async(settings: Settings, bug: str | None, trace_locks: bool = False, model_retries: int = 0,
                     answer_all: bool = False) -> int:
    try:
        # One request per trigger unless --model-retries (the SDK's own retries on 5xx), bounded in time; base URL
        # and key come from the environment.
        model_client = openai.AsyncOpenAI(max_retries=model_retries, timeout=MODEL_TIMEOUT_S)
    except openai.OpenAIError as exc:
        print(f"nio_reply_bot: {exc}", file=sys.stderr)
        return 2
    locks = LockTrace(os.environ.get("MATRIX_QA_TRACE_FILE") if trace_locks else None)
    bot = ReplyBot(settings, model_client, bug, locks, answer_all)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(bot.run(), name="bot")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task.done():
        exc = task.exception()
        if isinstance(exc, RuntimeError):  # an expected failure (login refused): one line says it all
            print(f"nio_reply_bot: {exc}", file=sys.stderr)
        else:  # a bug in this bot: its author wants the traceback in the log
            log.error("bot stopped unexpectedly", exc_info=exc)
        code = 1
    else:
        log.info("signalled; shutting down")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stopper.cancel()
    await bot.client.close()
    await model_client.close()
    return code


def _start_escaping_helper() -> None:
    """Out of the bot's process group (its own session) and out of the environment scan (nothing inherited): only
    the harness as a subreaper can find it once the bot is gone. Its argv names the state dir, for the test."""
    import subprocess

    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "escaping-helper", os.environ["MATRIX_QA_STATE_DIR"]],
        env={}, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    log.warning("escaping helper started: pid %d", helper.pid)


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    # A stop that comes before the event loop's handlers are in place (slow imports, startup) is still clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
    parser = argparse.ArgumentParser(description="A minimal Matrix reply bot (matrix-nio + openai).")
    parser.add_argument("--bug", choices=sorted(BUGS), help="turn on one deliberate defect")
    parser.add_argument("--config", type=Path, help="read the settings from this INI file, not the environment")
    parser.add_argument("--trace-locks", action="store_true", help="trace session-file lock holds")
    parser.add_argument("--answer-all", action="store_true",
                        help="answer every text message, mentioned or not, people's and bots' alike")
    parser.add_argument("--model-retries", type=int, default=0, choices=range(6),
                        help="let the model client retry a failed request this many times")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("nio").setLevel(logging.WARNING)  # nio is chatty at INFO on every sync
    try:
        settings = settings_from_ini(args.config) if args.config else settings_from_env(os.environ)
    except ConfigError as exc:
        print(f"nio_reply_bot: {exc}", file=sys.stderr)
        return 2
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    if args.bug == "escaping-helper":
        _start_escaping_helper()
    return asyncio.run(main_async(settings, args.bug, args.trace_locks, args.model_retries, args.answer_all))


if __name__ == "__main__":
    sys.exit(main())
