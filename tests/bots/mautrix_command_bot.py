#!/usr/bin/env python3
"""A small Matrix command bot on mautrix-python, with no model, that knows nothing about matrix-qa.

It answers one command, `!echo TEXT`, with exactly TEXT, where it is addressed as its settings say. It stands in
for the many Matrix bots that have no model at all (command bots, maubot plugins): the harness reaches it through
its bot file's `say: "!echo {text}"` (docs/bot-file.md, "Bots without a model").

Launch contract (environment): MATRIX_QA_HOMESERVER_URL, MATRIX_QA_USER_ID, MATRIX_QA_ACCESS_TOKEN,
MATRIX_QA_DEVICE_ID, MATRIX_QA_ROOM_IDS (rooms to join), MATRIX_QA_STATE_DIR (sync position, the commands
already answered, the reactions to its answers, kept across restarts), MATRIX_QA_TRACE_FILE (where it appends
its decisions: `inbound`, `reaction`, `reaction.removed`, `turn.start`/`turn.end`, `reply.sent`, `error`;
docs/trace-format.md). `--config FILE`: a JSON file with the scenario's `bot:` settings as the bot file's
template renders them ({"bot": {...}}): requireMention, allowlist, allowBots, knownBots, per-room roomSettings,
directRooms, dmRequireMention, threadReplies.

It sends its answers itself (one transaction id per answer, so a resend after a lost response is deduplicated
by the homeserver; a 429 waits `retry_after_ms`), because mautrix's request retries neither honour a rate
limit's wait nor keep the transaction id.

`--bug NAME` turns on one deliberate defect (see BUGS) so the harness can prove it catches that class of bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from mautrix.client import Client
from mautrix.client.state_store import SyncStore
from mautrix.types import Event, EventType, Filter, SyncToken

log = logging.getLogger("mautrix_command_bot")

BUGS = {
    "answer-unmentioned": "answers every command, mentioned or not",
    "thread-top-level": "answers threaded commands at the top level (m.in_reply_to only, no m.thread)",
    "die-on-command": "is SIGKILLed (by itself, as the OOM killer would) on a command it accepted, before answering",
    # The two below act after their turn's trace says it ended, and trace nothing of it: when the bot is stopped
    # it flushes what it held back (a queue of pending sends emptied on shutdown), so the harness sees it only if
    # it looks at the room after the bot has exited.
    "edit-after-turn": "edits each answer into a wrong text after its turn ended, untraced, as it shuts down",
    "late-answer-ignored": "answers each command it traced as dropped for mention-required, untraced, as it shuts "
                           "down",
    "late-plain-answer-ignored": "the same, in a plain message relating to nothing (no reply relation)",
    "late-plain-note-ignored": "says something else, untraced, in a plain message as it shuts down, for each "
                               "command it traced as dropped for mention-required",
    "redact-after-turn": "redacts each answer after its turn ended, untraced, as it shuts down",
    "quoted-answer-ignored": "answers each command it traced as dropped for mention-required right away, untraced, "
                             "in a plain message that quotes the command before the answer",
    "late-plain-answers-one-unnamed": "answers each command it traced as dropped for mention-required twice as it "
                                      "shuts down, in plain messages, tracing one reply.sent without an event id",
    # No defect: the honest counterpart of redact-after-turn, which the final checks must not fail.
    "cleanup": "(honest) redacts its answer to a message once someone else has redacted that message",
    "thread-no-fallback": "(honest) answers in a thread with no m.in_reply_to, as a client without the reply "
                          "fallback does",
    "notice-ignored": "(honest) says right away, untraced, that it did not answer a command it dropped for "
                      "mention-required, quoting the command",
}
# After an optional "Name: " a mention pill leaves in the plain body.
COMMAND = re.compile(r"^(?:[^\n:]{1,255}:\s+)?!echo (?P<text>.+)$", re.DOTALL)
# `--bare`: every message is its command (an echo bot; its bot file's `say` is "{text}").
BARE_COMMAND = re.compile(r"^(?:[^\n:]{1,255}:\s+)?(?P<text>.+)$", re.DOTALL)
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}  # catch-up after downtime arrives in one batch
SEND_ATTEMPTS = 8
SEND_BACKOFF_S = (0.2, 0.5, 1.0, 2.0)


class ConfigError(Exception):
    """A missing or malformed setting: reported in one line, exit code 2."""


# --- pure decisions and shapes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Who may address the bot where, from the scenario's `bot:` settings (the defaults without a config)."""

    require_mention: bool = True
    allowlist: frozenset[str] | None = None
    allow_bots: str = "off"
    known_bots: frozenset[str] = frozenset()
    direct: bool = False
    thread_replies: str = "inbound"


@dataclass(frozen=True)
class Settings:
    homeserver: str
    user_id: str
    access_token: str
    device_id: str
    rooms: tuple[str, ...]
    state_dir: Path
    bot: Mapping[str, Any] = field(default_factory=dict)

    def policy(self, room_id: str) -> Policy:
        bot = self.bot
        room = {**bot, **(bot.get("roomSettings") or {}).get(room_id, {})}
        direct = room_id in (bot.get("directRooms") or [])
        allowlist = room.get("allowlist")
        return Policy(
            require_mention=bool(bot.get("dmRequireMention", False)) if direct else bool(room.get("requireMention",
                                                                                                   True)),
            allowlist=frozenset(allowlist) if allowlist is not None else None,
            allow_bots=str(room.get("allowBots", "off")), known_bots=frozenset(bot.get("knownBots") or []),
            direct=direct, thread_replies=str(bot.get("threadReplies", "inbound")))


def settings_from(env: Mapping[str, str], config: Path | None) -> Settings:
    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    bot: Mapping[str, Any] = {}
    if config is not None:
        try:
            bot = json.loads(config.read_text(encoding="utf-8")).get("bot") or {}
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{config}: {exc}") from None
    rooms = tuple(r.strip() for r in env.get("MATRIX_QA_ROOM_IDS", "").split(",") if r.strip())
    return Settings(required("MATRIX_QA_HOMESERVER_URL"), required("MATRIX_QA_USER_ID"),
                    required("MATRIX_QA_ACCESS_TOKEN"), env.get("MATRIX_QA_DEVICE_ID", "").strip(), rooms,
                    Path(required("MATRIX_QA_STATE_DIR")), bot)


def is_mention(content: Mapping[str, Any], bot_id: str) -> bool:
    mentions = content.get("m.mentions")
    if not isinstance(mentions, Mapping):
        return bot_id in str(content.get("body", ""))  # a legacy client: the id in the body is all there is
    user_ids = mentions.get("user_ids")
    return isinstance(user_ids, list) and bot_id in user_ids


def drop_reason(event: Mapping[str, Any], bot_id: str, policy: Policy, *, bug: str | None = None) -> str | None:
    """Why the bot does not take this room message as addressed to it; None when it does."""
    content = event.get("content") or {}
    sender = str(event.get("sender", ""))
    if sender == bot_id:
        return "own-message"
    if content.get("msgtype") == "m.notice":
        return "notice"
    if content.get("msgtype") not in ("m.text", "m.emote"):
        return "not-a-text-message"
    if (content.get("m.relates_to") or {}).get("rel_type") == "m.replace":
        return "edit"
    mentioned = is_mention(content, bot_id) or bug == "answer-unmentioned"
    if sender in policy.known_bots:
        if policy.allow_bots == "off":
            return "bot-sender-blocked"
        if policy.allow_bots == "mentions" and not mentioned:
            return "mention-required"
    if policy.require_mention and not mentioned:
        return "mention-required"
    if policy.allowlist is not None and sender not in policy.allowlist:
        return "sender-not-allowed"
    return None


def session_of(room_id: str, content: Mapping[str, Any]) -> str:
    relates = content.get("m.relates_to") or {}
    root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    return f"{room_id}/{root}" if root else room_id


def retry_delay_s(status: int, body: Mapping[str, Any], attempt: int) -> float | None:
    """How long to wait before sending again after this answer to a send, or None to give up (a refusal)."""
    if status == 429:
        return max(float(body.get("retry_after_ms") or 0) / 1000, SEND_BACKOFF_S[0])
    if status >= 500:
        return SEND_BACKOFF_S[min(attempt, len(SEND_BACKOFF_S) - 1)]
    return None


def command_text(body: str, bare: bool = False) -> str | None:
    """TEXT of an `!echo TEXT` command (after a mention's "Name: "), else None; `bare`: the whole body is TEXT."""
    found = (BARE_COMMAND if bare else COMMAND).match(body.strip())
    return found.group("text") if found else None


def reply_content(text: str, event: Mapping[str, Any], policy: Policy, *, bug: str | None = None) -> dict[str, Any]:
    """The answer: in a DM a plain message; in a room a reply to the command, in its thread when it came in one
    (threadReplies: inbound), always in a thread (always) or never (off)."""
    content: dict[str, Any] = {"msgtype": "m.notice", "body": text, "m.mentions": {}}
    if policy.direct:
        return content
    trigger = str(event.get("event_id"))
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    root = relates.get("event_id") if relates.get("rel_type") == "m.thread" else None
    if policy.thread_replies == "always":
        root = root or trigger
    elif policy.thread_replies == "off":
        root = None
    reply: dict[str, Any] = {"m.in_reply_to": {"event_id": trigger}}
    if root and bug == "thread-no-fallback":
        reply = {"rel_type": "m.thread", "event_id": root}  # the thread only: which message it answers is unsaid
    elif root and bug != "thread-top-level":
        reply = {"rel_type": "m.thread", "event_id": root, "is_falling_back": True, **reply}
    content["m.relates_to"] = reply
    return content


# --- state on disk ------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)  # atomic: a kill never leaves half a file


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class FileSyncStore(SyncStore):
    """The sync position, saved one batch late: mautrix stores a batch's token before it handles the batch, so
    the token on disk is the one whose batch is fully answered (a redelivery is deduplicated by `answered`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        saved = _read_json(path)
        self.saved: str | None = saved.get("next_batch") if isinstance(saved, dict) else None
        self.pending: str | None = None

    async def put_next_batch(self, next_batch: SyncToken) -> None:
        if self.pending is not None:  # called again: the previous batch was handled (the loop gathers first)
            _write_json(self.path, {"next_batch": self.pending})
        self.pending = next_batch

    async def get_next_batch(self) -> SyncToken:
        return SyncToken(self.saved or "")


class Trace:
    """The matrix-qa trace records this bot writes (docs/trace-format.md), appended to $MATRIX_QA_TRACE_FILE."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def emit(self, kind: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"t": round(time.monotonic_ns() / 1e6, 3), "type": kind, **fields}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


# --- the bot ------------------------------------------------------------------------------------------------


class CommandBot:
    def __init__(self, settings: Settings, bug: str | None, trace: Trace, bare: bool = False) -> None:
        self.s = settings
        self.bug = bug
        self.bare = bare
        self.trace = trace
        self.state_path = settings.state_dir / "answered.json"
        state = _read_json(self.state_path) or {}
        self.answered: list[str] = list(state.get("answered", []))
        self.sent: list[str] = list(state.get("sent", []))  # our own answers, so reactions to them are ours
        self.reactions: dict[str, dict[str, str]] = dict(state.get("reactions", {}))
        self.answer_of: dict[str, str] = {}  # trigger -> our answer, for the cleanup variant (this process only)
        self.held_back: list[tuple[str, dict[str, Any]]] = []  # (room, content): the two late bugs' sends
        self.sync_store = FileSyncStore(settings.state_dir / "sync-token.json")
        self.client = Client(mxid=settings.user_id, device_id=settings.device_id, base_url=settings.homeserver,
                             token=settings.access_token, sync_store=self.sync_store)
        # First start ever: what is already in the rooms is history, not for us. After a restart, the saved
        # position brings what came while the bot was down.
        self.client.ignore_initial_sync = self.sync_store.saved is None
        self.client.add_event_handler(EventType.ROOM_MESSAGE, self.on_message)
        self.client.add_event_handler(EventType.REACTION, self.on_reaction)
        self.client.add_event_handler(EventType.ROOM_REDACTION, self.on_redaction)

    def save(self) -> None:
        _write_json(self.state_path, {"answered": self.answered[-1000:], "sent": self.sent[-1000:],
                                      "reactions": self.reactions})

    async def run(self) -> None:
        whoami = await self.client.whoami()
        log.info("logged in as %s (device %s)", whoami.user_id, whoami.device_id)
        for room_id in self.s.rooms:
            await self.client.join_room_by_id(room_id)
            log.info("joined %s", room_id)
        ready = asyncio.Event()

        async def synced(_: Any) -> None:
            if not ready.is_set():
                ready.set()
                print(f"syncing as {self.s.user_id}", flush=True)

        from mautrix.client import InternalEventType

        self.client.add_event_handler(InternalEventType.SYNC_SUCCESSFUL, synced)
        await self.client.start(Filter.deserialize(SYNC_FILTER))

    async def on_message(self, evt: Event) -> None:
        event = evt.serialize()
        room_id = str(event.get("room_id"))
        if room_id not in self.s.rooms:
            return
        content = event.get("content") or {}
        policy = self.s.policy(room_id)
        trigger = str(event.get("event_id"))
        session = session_of(room_id, content)
        reason = drop_reason(event, self.s.user_id, policy, bug=self.bug)
        text = command_text(str(content.get("body", "")), self.bare) if reason is None else None
        if reason is None and text is None:
            reason = "not-a-command"
        if reason is None and trigger in self.answered:
            reason = "duplicate"  # redelivered after a restart that came before the saved sync position moved
        self.trace.emit("inbound", eventId=trigger, roomId=room_id, sender=event.get("sender"), session=session,
                        decision="dropped" if reason else "accepted", reason=reason or "accepted")
        if reason is not None or text is None:
            log.info("not answering %s: %s", trigger, reason)
            late = command_text(str(content.get("body", "")), self.bare)
            if reason == "mention-required" and late is not None:
                await self.on_dropped_command(room_id, late)
            if self.bug == "late-answer-ignored" and reason == "mention-required" and late is not None:
                self.held_back.append((room_id, reply_content(late, event, policy)))
            if self.bug == "late-plain-answer-ignored" and reason == "mention-required" and late is not None:
                self.held_back.append((room_id, {"msgtype": "m.notice", "body": late, "m.mentions": {}}))
            if self.bug == "late-plain-note-ignored" and reason == "mention-required" and late is not None:
                self.held_back.append((room_id, {"msgtype": "m.notice", "body": "goodbye", "m.mentions": {}}))
            return
        self.trace.emit("turn.start", session=session, attempt=trigger, eventId=trigger)
        if self.bug == "die-on-command":
            os.kill(os.getpid(), signal.SIGKILL)
        answer = await self.send(room_id, reply_content(text, event, policy, bug=self.bug))
        if answer is not None:
            self.sent.append(answer)
            self.answer_of[trigger] = answer
            self.trace.emit("reply.sent", eventId=answer, inReplyTo=trigger, session=session, attempt=trigger)
        self.answered.append(trigger)
        self.save()
        self.trace.emit("turn.end", session=session, attempt=trigger, eventId=trigger,
                        outcome="replied" if answer else "failed")
        log.info("answered %s in %s", trigger, room_id)
        if self.bug == "edit-after-turn" and answer is not None:
            wrong = {"msgtype": "m.notice", "body": f"not {text}", "m.mentions": {}}
            self.held_back.append((room_id, {**wrong, "body": f"* not {text}", "m.new_content": wrong,
                                             "m.relates_to": {"rel_type": "m.replace", "event_id": answer}}))
        if self.bug == "redact-after-turn" and answer is not None:
            self.held_back.append((room_id, {"redacts": answer}))

    async def on_dropped_command(self, room_id: str, text: str) -> None:
        """What a variant does about a command it dropped for mention-required, untraced: the quoted-answer-ignored
        bug answers it after quoting it, late-plain-answers-one-unnamed holds two answers back, notice-ignored (an
        honest bot) says it did not answer, quoting it."""
        typed = text if self.bare else f"!echo {text}"
        plain = {"msgtype": "m.notice", "m.mentions": {}}
        if self.bug == "quoted-answer-ignored":
            await self.send(room_id, {**plain, "body": f"> {typed}\n\n{text}"})
        elif self.bug == "late-plain-answers-one-unnamed":
            self.held_back += [(room_id, {**plain, "body": text}), (room_id, {**plain, "body": text})]
        elif self.bug == "notice-ignored":
            await self.send(room_id, {**plain, "body": f"not answered (mention me to be answered): {typed}"})

    async def send_held_back(self) -> None:
        """The late bugs: what was held back goes out now, after every turn.end, with no trace record."""
        for room_id, content in self.held_back:
            sent = await self.send(room_id, content, "redact" if "redacts" in content else "send")
            log.warning("sent held back %s in %s", sent, room_id)
        if self.bug == "late-plain-answers-one-unnamed" and self.held_back:
            self.trace.emit("reply.sent", session=self.held_back[0][0])  # one send traced, its event id lost
        self.held_back.clear()

    async def on_reaction(self, evt: Event) -> None:
        """A reaction is never answered; one to our answer is recorded (kept in the state), others ignored."""
        event = evt.serialize()
        room_id = str(event.get("room_id"))
        relates = (event.get("content") or {}).get("m.relates_to") or {}
        target, sender = str(relates.get("event_id")), str(event.get("sender"))
        recorded = room_id in self.s.rooms and sender != self.s.user_id and target in self.sent
        if recorded:
            self.reactions[str(event.get("event_id"))] = {"key": str(relates.get("key")), "target": target,
                                                          "session": room_id}
            self.save()
        reason = "recorded" if recorded else ("own-message" if sender == self.s.user_id else "not-a-bot-message")
        self.trace.emit("reaction", eventId=event.get("event_id"), roomId=room_id, sender=sender,
                        key=relates.get("key"), target=target, session=room_id,
                        decision="recorded" if recorded else "ignored", reason=reason)

    async def on_redaction(self, evt: Event) -> None:
        """A redaction is never answered; removing a recorded reaction is recorded too."""
        event = evt.serialize()
        room_id = str(event.get("room_id"))
        if room_id not in self.s.rooms:
            return
        sender = str(event.get("sender"))
        redacts = str((event.get("content") or {}).get("redacts") or event.get("redacts"))
        self.trace.emit("inbound", eventId=event.get("event_id"), roomId=room_id, sender=sender, session=room_id,
                        decision="dropped", reason="own-message" if sender == self.s.user_id else "redaction")
        answer = self.answer_of.pop(redacts, None)
        if self.bug == "cleanup" and answer is not None and sender != self.s.user_id:
            # The question is gone: take the answer back with it.
            log.info("cleaned up %s (its question %s was redacted): %s", answer, redacts,
                     await self.send(room_id, {"redacts": answer}, "redact"))
        removed = self.reactions.pop(redacts, None)
        if removed is not None:
            self.save()
            self.trace.emit("reaction.removed", eventId=event.get("event_id"), redacts=redacts, key=removed["key"],
                            target=removed["target"], session=removed["session"], decision="recorded")

    async def send(self, room_id: str, content: dict[str, Any], how: str = "send") -> str | None:
        """Send one answer under one transaction id; the event id, or None when the homeserver refused it. `how`
        "redact": redact `content["redacts"]` instead (the redact-after-turn bug, the cleanup variant)."""
        txn = self.client.api.get_txn_id()
        what = f"redact/{urllib.parse.quote(content['redacts'])}" if how == "redact" else "send/m.room.message"
        url = f"{self.s.homeserver.rstrip('/')}/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/{what}/{txn}"
        headers = {"Authorization": f"Bearer {self.s.access_token}"}
        status, body = 0, {}
        for attempt in range(SEND_ATTEMPTS):
            try:
                async with self.client.api.session.put(url, json=content, headers=headers,
                                                       timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    status = resp.status
                    with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                        body = await resp.json()
                if status == 200 and isinstance(body, dict) and body.get("event_id"):
                    return str(body["event_id"])
                delay = retry_delay_s(status, body if isinstance(body, dict) else {}, attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:  # the answer was lost: send the same again
                status, body, delay = 0, {"error": f"{type(exc).__name__}: {exc}"}, SEND_BACKOFF_S[0]
            if delay is None:
                break
            log.warning("send to %s: %s; again in %.1fs", room_id, status or body.get("error"), delay)
            await asyncio.sleep(delay)
        error = body.get("error") if isinstance(body, dict) else None
        self.trace.emit("error", where="send m.room.message", roomId=room_id, status=status, error=error)
        log.error("could not send to %s: %s %s", room_id, status, error)
        return None


async def main_async(settings: Settings, bug: str | None, bare: bool = False) -> int:
    bot = CommandBot(settings, bug, Trace(os.environ.get("MATRIX_QA_TRACE_FILE")), bare)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(bot.run(), name="bot")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task.done() and not bot.client.syncing_task:
        log.error("bot stopped before syncing", exc_info=task.exception())
        code = 1
    else:
        log.info("signalled; shutting down")
        bot.client.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bot.send_held_back()
    stopper.cancel()
    await bot.client.api.session.close()
    return code


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a stop before the loop's handlers are in place is clean too
        signal.signal(sig, _exit_now)
    parser = argparse.ArgumentParser(description="A minimal Matrix command bot (mautrix): !echo TEXT.")
    parser.add_argument("--bug", choices=sorted(BUGS), help="turn on one deliberate defect")
    parser.add_argument("--config", type=Path, help="JSON with the scenario's bot: settings ({\"bot\": {...}})")
    parser.add_argument("--bare", action="store_true", help="every message is its command (say: \"{text}\")")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mau").setLevel(logging.WARNING)
    try:
        settings = settings_from(os.environ, args.config)
    except ConfigError as exc:
        print(f"mautrix_command_bot: {exc}", file=sys.stderr)
        return 2
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    return asyncio.run(main_async(settings, args.bug, args.bare))


if __name__ == "__main__":
    sys.exit(main())
