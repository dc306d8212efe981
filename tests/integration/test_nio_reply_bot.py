"""The foreign test bot (tests/bots/nio_reply_bot.py) on its own: a real Synapse, the mock provider, one test user.

This proves the bot works before the harness is asked to judge it, so a harness failure against it means the
harness (or a deliberate --bug), not a broken test bot. The homeserver is the session's shared Synapse
(tests/integration/shared_synapse.py; users with a per-module suffix, rooms of their own): nothing here stops,
restarts or looks at the homeserver's process, and a boot of its own cost ~2 s of CPU (a third of the file). With
MATRIX_QA_TESTS_OWN_SYNAPSE=1 the file boots one of its own, as before the sharing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from nio import AsyncClient, LoginResponse

from qa.actors import Actor
from qa.homeserver.base import UserCredentials
from qa.homeserver.synapse import SynapseHomeserver
from qa.provider.mock import MockProvider
from qa.provider.rules import Rule
from qa.waiting import Stream
from tests.integration.shared_synapse import SessionSynapse

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

BOT_SCRIPT = Path(__file__).resolve().parents[1] / "bots" / "nio_reply_bot.py"
READY_S = 60.0  # generous: a cold Python start plus login, joins and a first sync on a shared 2-core machine
REPLY_S = 30.0
STOP_S = 30.0  # a clean stop ends the wait at once; a bot at the back of a loaded machine's queue took >10 s
FAIL_PROMPT = "please fail this model request"
T = TypeVar("T")


@dataclass
class World:
    tmp: Path
    hs: SynapseHomeserver
    provider: MockProvider
    alice: Actor
    bot: UserCredentials


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, session_synapse: SessionSynapse) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("nio-bot")
    own = os.environ.get("MATRIX_QA_TESTS_OWN_SYNAPSE") == "1"
    failing = Rule.model_validate({"name": "fail", "match": {"latest_user": FAIL_PROMPT},
                                   "error": {"status": 500, "message": "mock failure"}})
    provider = MockProvider([failing])
    alice: Actor | None = None
    hs = SynapseHomeserver(tmp / "hs", tmp / "logs") if own else None
    try:
        if hs is None:
            await asyncio.to_thread(session_synapse.ensure_running)
            hs, on_its_loop = session_synapse.hs, session_synapse.acall
        else:
            await hs.start()
            on_its_loop = _here
        await provider.start()
        suffix = secrets.token_hex(4)  # the shared server may already hold an earlier module's users
        creds = await on_its_loop(hs.register_user(f"alice-{suffix}", "alice-pw-1"))
        bot = await on_its_loop(hs.register_user(f"replybot-{suffix}", "replybot-pw-2"))
        alice = Actor("alice", hs.base_url, creds.user_id, creds.password, tmp / "alice")
        await alice.login()
        await alice.start_sync()
        yield World(tmp, hs, provider, alice, bot)
    finally:
        if alice is not None:
            await alice.close()
        await provider.stop()
        if own and hs is not None:
            await hs.stop()


async def _here(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


class BotRun:
    """The bot as a child process; stdout lines become a stream to wait on, stderr goes to a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, bug: str | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.args = ["--bug", bug] if bug else []
        self.lines: Stream[str] = Stream()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(BOT_SCRIPT), *self.args, stdout=asyncio.subprocess.PIPE, stderr=log,
                stdin=asyncio.subprocess.DEVNULL, env={**os.environ, **self.env})
        await self.lines.reopen()
        self._reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            await self.lines.append(line.decode(errors="replace").rstrip("\n"))
        await self.lines.close(f"bot exited with code {await proc.wait()}")

    async def wait_ready(self, user_id: str) -> None:
        try:
            await self.lines.wait_for(lambda line: line == f"syncing as {user_id}", READY_S, "the syncing line")
        except Exception as exc:
            raise AssertionError(f"{exc}\nbot log:\n{self.log_tail()}") from None

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    async def stop(self) -> int | None:
        """SIGTERM and a bounded wait; SIGKILL if the bot ignores it. Returns the exit code of a clean stop."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code: int | None = None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(proc.wait(), STOP_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        else:
            code = proc.returncode
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, STOP_S)
        return code


@pytest_asyncio.fixture(loop_scope="module")
async def bots() -> AsyncIterator[list[BotRun]]:
    started: list[BotRun] = []
    yield started
    for bot in started:
        await bot.stop()


async def access_token(world: World) -> tuple[str, str]:
    client = AsyncClient(world.hs.base_url, world.bot.user_id)
    try:
        resp = await client.login(world.bot.password, device_name="nio-reply-bot")
        assert isinstance(resp, LoginResponse), resp
        return resp.access_token, resp.device_id
    finally:
        await client.close()


def bot_env(world: World, room_id: str, state_dir: Path, *, token: str = "", device: str = "") -> dict[str, str]:
    return {
        "MATRIX_QA_HOMESERVER_URL": world.hs.base_url, "MATRIX_QA_USER_ID": world.bot.user_id,
        "MATRIX_QA_PASSWORD": world.bot.password, "MATRIX_QA_ACCESS_TOKEN": token, "MATRIX_QA_DEVICE_ID": device,
        "MATRIX_QA_ROOM_IDS": room_id, "MATRIX_QA_STATE_DIR": str(state_dir),
        "MATRIX_QA_TRACE_FILE": str(state_dir.parent / "unused-trace.jsonl"), "MATRIX_QA_SCENARIO": "smoke",
        "MATRIX_QA_MODEL": world.provider.model, "OPENAI_BASE_URL": world.provider.base_url,
        "OPENAI_API_KEY": "mock-key",
    }


def marker() -> str:
    return f"MQA-{uuid.uuid4().hex[:8]}"


def ask(world: World, text: str, *, mention: bool = True, thread_root: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": f"{world.bot.user_id}: {text}",
                               "m.mentions": {"user_ids": [world.bot.user_id]} if mention else {}}
    if thread_root:
        content["m.relates_to"] = {"rel_type": "m.thread", "event_id": thread_root, "is_falling_back": True,
                                   "m.in_reply_to": {"event_id": thread_root}}
    return content


def is_reply(world: World, event: dict[str, Any], trigger: str) -> bool:
    relates = (event.get("content") or {}).get("m.relates_to") or {}
    return event.get("sender") == world.bot.user_id and relates.get("m.in_reply_to", {}).get("event_id") == trigger


def replies_to(world: World, trigger: str) -> list[dict[str, Any]]:
    return [e for e in world.alice.events.items if is_reply(world, e, trigger)]


async def reply_to(world: World, trigger: str) -> dict[str, Any]:
    return await world.alice.events.wait_for(lambda e: is_reply(world, e, trigger), REPLY_S,
                                             f"the bot's reply to {trigger}")


async def test_replies_in_place_keeps_sessions_apart_and_catches_up_after_a_restart(
        world: World, bots: list[BotRun]) -> None:
    alice, bot_id = world.alice, world.bot.user_id
    room = await alice.create_room("smoke", [bot_id])
    # Sent before the bot's very first start: history it must leave alone.
    before = marker()
    history = await alice.send(room, ask(world, f"reply with only this exact marker: {before}"))
    token, device = await access_token(world)
    state = world.tmp / "state-main"
    bot = BotRun(bot_env(world, room, state, token=token, device=device), world.tmp / "bot-main.log")
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(bot_id)

    # The id typed into the body with an m.mentions that leaves the bot out is not a mention. It goes first:
    # the bot answers in order, so once the next message is answered this one would have been too.
    ignored = marker()
    unmentioned = await alice.send(room, ask(world, f"reply with only this exact marker: {ignored}", mention=False))
    first = marker()
    top = await alice.send(room, ask(world, f"reply with only this exact marker: {first}"))
    reply = await reply_to(world, top)
    assert reply["content"]["body"] == first
    assert reply["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": top}}
    assert reply["content"]["m.mentions"] == {}
    assert replies_to(world, unmentioned) == [] and world.provider.entries_for(ignored) == []
    assert replies_to(world, history) == [] and world.provider.entries_for(before) == []

    in_thread = marker()
    threaded = await alice.send(room, ask(world, f"reply with only this exact marker: {in_thread}", thread_root=top))
    reply = await reply_to(world, threaded)
    assert reply["content"]["body"] == in_thread
    assert reply["content"]["m.relates_to"] == {"rel_type": "m.thread", "event_id": top, "is_falling_back": True,
                                                "m.in_reply_to": {"event_id": threaded}}
    [thread_request] = world.provider.entries_for(in_thread)
    assert not thread_request.contains(first), "the thread's session must not carry the top-level conversation"

    # A failed model call: one short notice in place, no traceback in the room, and the bot keeps going.
    failed = await alice.send(room, ask(world, FAIL_PROMPT))
    notice = await reply_to(world, failed)
    assert notice["content"]["msgtype"] == "m.notice" and "Traceback" not in notice["content"]["body"]

    assert await bot.stop() == 0
    # Sent while the bot is down: the restarted bot must catch up on it once, and remember the room's history.
    while_down = marker()
    missed = await alice.send(room, ask(world, f"reply with only this exact marker: {while_down}"))
    bot = BotRun(bot.env, bot.log_path)
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(bot_id)
    assert (await reply_to(world, missed))["content"]["body"] == while_down
    [catch_up_request] = world.provider.entries_for(while_down)
    assert catch_up_request.contains(first), "the top-level session's history must survive the restart"
    after = await alice.send(room, ask(world, f"reply with only this exact marker: {marker()}"))
    await reply_to(world, after)
    for trigger in (top, threaded, failed, missed, after):
        assert len(replies_to(world, trigger)) == 1, f"{trigger} answered {len(replies_to(world, trigger))} times"
    assert await bot.stop() == 0


async def test_thread_top_level_bug_answers_outside_the_thread(world: World, bots: list[BotRun]) -> None:
    alice, bot_id = world.alice, world.bot.user_id
    room = await alice.create_room("buggy", [bot_id])
    # No access token: this run takes the password-login path.
    bot = BotRun(bot_env(world, room, world.tmp / "state-bug"), world.tmp / "bot-bug.log", bug="thread-top-level")
    bots.append(bot)
    await bot.start()
    await bot.wait_ready(bot_id)
    root = await alice.send(room, {"msgtype": "m.text", "body": "a thread about nothing", "m.mentions": {}})
    token = marker()
    threaded = await alice.send(room, ask(world, f"reply with only this exact marker: {token}", thread_root=root))
    reply = await reply_to(world, threaded)
    assert reply["content"]["body"] == token
    assert reply["content"]["m.relates_to"] == {"m.in_reply_to": {"event_id": threaded}}
    assert await bot.stop() == 0
