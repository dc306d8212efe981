#!/usr/bin/env python3
"""A bot of two Matrix accounts (matrix-nio + the openai SDK) that knows nothing about matrix-qa's insides.

Like many multi-agent bots, it runs a *router* account beside the *agent* account that answers: the router
syncs, decides which messages are for the bot (those that mention the router or the agent), and hands each to
the agent, which asks the model and answers in the message's place (a reply, in its thread when it has one).
The router itself never speaks.

Launch contract (environment only):
  MATRIX_QA_HOMESERVER_URL                      the homeserver
  MATRIX_QA_USER_ID, MATRIX_QA_ACCESS_TOKEN, MATRIX_QA_DEVICE_ID   the router (the bot's main account)
  MATRIX_QA_ACCOUNTS                            JSON; its "agent" entry is the answering account, or else
  MATRIX_QA_REGISTRATION_TOKEN                  the bot registers its agent itself (localpart $AGENT_PREFIX…)
                                                and the router invites it to its rooms
  MATRIX_QA_ROOM_IDS                            comma-separated rooms both accounts join
  MATRIX_QA_MODEL                               model name; OPENAI_BASE_URL / OPENAI_API_KEY go to the SDK

`--bug router-answers` makes the router answer itself instead of handing over (the bug its scenario catches);
`--bug die-mid-turn` kills the whole bot while the agent asks the model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai
from nio import AsyncClient, AsyncClientConfig, JoinError, RoomSendError, SyncError, WhoamiError

log = logging.getLogger("router_agent_bot")
BUGS = {"router-answers": "the router answers mentions itself instead of handing them to the agent",
        "die-mid-turn": "is SIGKILLed (by itself, as the OOM killer would) while the agent's model request is out"}
SYNC_TIMEOUT_MS = 30_000


class ConfigError(Exception):
    """A missing or malformed launch-contract variable: one line, exit code 2."""


@dataclass(frozen=True)
class Account:
    user_id: str
    access_token: str
    device_id: str


@dataclass(frozen=True)
class Settings:
    homeserver: str
    router: Account
    agent: Account
    rooms: tuple[str, ...]
    model: str


def settings_from_env(env: Mapping[str, str], registered: Account | None = None) -> Settings:
    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    try:
        accounts = json.loads(required("MATRIX_QA_ACCOUNTS")) if registered is None else {
            "agent": {"user_id": registered.user_id, "access_token": registered.access_token,
                      "device_id": registered.device_id}}
        agent = accounts["agent"]
        agent_account = Account(agent["user_id"], agent["access_token"], agent["device_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"MATRIX_QA_ACCOUNTS needs an 'agent' entry with user_id, access_token, device_id "
                          f"({type(exc).__name__}: {exc})") from None
    router = Account(required("MATRIX_QA_USER_ID"), required("MATRIX_QA_ACCESS_TOKEN"),
                     required("MATRIX_QA_DEVICE_ID"))
    rooms = tuple(r.strip() for r in env.get("MATRIX_QA_ROOM_IDS", "").split(",") if r.strip())
    return Settings(required("MATRIX_QA_HOMESERVER_URL"), router, agent_account, rooms, required("MATRIX_QA_MODEL"))


# --- pure decisions -----------------------------------------------------------------------------------------


def mentioned(content: Mapping[str, Any], user_ids: tuple[str, ...]) -> bool:
    """m.mentions decides when the client sent it; a legacy client's body naming the full id otherwise."""
    mentions = content.get("m.mentions")
    if mentions is None:
        return any(u in str(content.get("body", "")) for u in user_ids)
    named = mentions.get("user_ids") if isinstance(mentions, Mapping) else None
    return isinstance(named, list) and any(u in named for u in user_ids)


def for_the_bot(event: Mapping[str, Any], own: tuple[str, ...]) -> bool:
    """A text message from someone else that mentions one of the bot's accounts, not an edit."""
    content = event.get("content")
    if event.get("type") != "m.room.message" or event.get("sender") in own or not isinstance(content, Mapping):
        return False
    relates = content.get("m.relates_to")
    if isinstance(relates, Mapping) and relates.get("rel_type") == "m.replace":
        return False
    return content.get("msgtype") == "m.text" and mentioned(content, own)


def reply_content(text: str, trigger: Mapping[str, Any]) -> dict[str, Any]:
    """A reply to `trigger`; in its thread when it is in one (the spec's fallback shape)."""
    relates_in = (trigger.get("content") or {}).get("m.relates_to")
    relates: dict[str, Any] = {"m.in_reply_to": {"event_id": trigger["event_id"]}}
    if isinstance(relates_in, Mapping) and relates_in.get("rel_type") == "m.thread":
        relates = {"rel_type": "m.thread", "event_id": relates_in.get("event_id"), "is_falling_back": True,
                   **relates}
    return {"msgtype": "m.text", "body": text, "m.mentions": {}, "m.relates_to": relates}


# --- the two accounts ---------------------------------------------------------------------------------------


def client_for(homeserver: str, account: Account) -> AsyncClient:
    client = AsyncClient(homeserver, account.user_id, device_id=account.device_id,
                         config=AsyncClientConfig(encryption_enabled=False,
                                                  request_timeout=SYNC_TIMEOUT_MS / 1000 + 15))
    client.restore_login(account.user_id, account.device_id, account.access_token)
    return client


class Agent:
    """The account that answers: it asks the model and posts the reply. It does not sync: the router listens."""

    def __init__(self, client: AsyncClient, model: openai.AsyncOpenAI, model_name: str,
                 histories: dict[tuple[str, str | None], list[dict[str, str]]] | None = None) -> None:
        self.client, self.model, self.model_name = client, model, model_name
        # One conversation per (room, thread root), in memory: a follow-up in a thread carries what came before.
        self.histories = {} if histories is None else histories

    async def answer(self, room_id: str, event: Mapping[str, Any]) -> None:
        relates = event["content"].get("m.relates_to")
        root = relates.get("event_id") if isinstance(relates, Mapping) and relates.get("rel_type") == "m.thread" \
            else None
        history = self.histories.setdefault((room_id, root), [])
        question = str(event["content"].get("body", ""))
        text = await ask(self.model, self.model_name, [*history, {"role": "user", "content": question}])
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        sent = await self.client.room_send(room_id, "m.room.message", reply_content(text, event))
        if isinstance(sent, RoomSendError):
            log.error("agent could not answer %s: %s", event.get("event_id"), sent.message)


async def ask(model: openai.AsyncOpenAI, model_name: str, messages: list[dict[str, str]]) -> str:
    try:
        result = await model.chat.completions.create(model=model_name, messages=messages)  # type: ignore[arg-type]
    except openai.OpenAIError as exc:
        return f"(the model failed: {type(exc).__name__})"
    return (result.choices[0].message.content if result.choices else None) or "(no answer)"


async def register_agent(env: Mapping[str, str]) -> Account:
    """The agent's account, registered with the registration token (the spec's m.login.registration_token)."""
    import secrets

    import aiohttp

    url = env["MATRIX_QA_HOMESERVER_URL"].rstrip("/") + "/_matrix/client/v3/register"
    request: dict[str, Any] = {"username": env.get("AGENT_PREFIX", "agent-") + secrets.token_hex(4),
                               "password": secrets.token_urlsafe(18), "initial_device_display_name": "agent"}
    token = env["MATRIX_QA_REGISTRATION_TOKEN"]
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=request) as resp:
            made = await resp.json()
        # User-interactive auth: the token's stage, then whatever the flow still asks (m.login.dummy).
        for stage in ("m.login.registration_token", "m.login.dummy"):
            auth = {"type": stage, "session": made.get("session"), **({"token": token} if "token" in stage else {})}
            async with http.post(url, json={**request, "auth": auth}) as resp:
                made = await resp.json()
                if resp.status == 200:
                    break
                if resp.status != 401 or "errcode" in made:
                    raise RuntimeError(f"registering the agent failed: HTTP {resp.status} {made.get('errcode')}")
        else:
            raise RuntimeError("registering the agent failed: the flow did not end")
    log.info("registered the agent %s", made["user_id"])
    return Account(made["user_id"], made["access_token"], made["device_id"])


async def die_mid_turn(agent: Agent, event: Mapping[str, Any]) -> None:
    """The bug: the model request goes out, and the process dies before its answer is back."""
    question = [{"role": "user", "content": str(event["content"].get("body", ""))}]
    asking = asyncio.create_task(ask(agent.model, agent.model_name, question))
    await asyncio.wait({asking}, timeout=0.2)
    os.kill(os.getpid(), signal.SIGKILL)


class Router:
    """The main account: syncs, picks the messages for the bot, hands them to the agent."""

    def __init__(self, s: Settings, client: AsyncClient, agent: Agent, bug: str | None) -> None:
        self.s, self.client, self.agent, self.bug = s, client, agent, bug
        self.own = (s.router.user_id, s.agent.user_id)
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, invite_agent: bool = False) -> None:
        for client, who in ((self.client, self.s.router), (self.agent.client, self.s.agent)):
            if invite_agent and who is self.s.agent:  # an account the harness does not know: ours to invite
                for room_id in self.s.rooms:
                    await self.client.room_invite(room_id, who.user_id)
            who_am_i = await client.whoami()
            if isinstance(who_am_i, WhoamiError):
                raise RuntimeError(f"the session of {who.user_id} was refused: {who_am_i.message}")
            for room_id in self.s.rooms:
                joined = await client.join(room_id)
                if isinstance(joined, JoinError):
                    raise RuntimeError(f"{who.user_id} could not join {room_id}: {joined.message}")
        token, ready = None, False
        while True:
            resp = await self.client.sync(timeout=0 if token is None else SYNC_TIMEOUT_MS, since=token)
            if isinstance(resp, SyncError):
                log.warning("sync failed: %s", resp.message)
                await asyncio.sleep(0.5)
                continue
            if token is not None:  # the first batch is history: nothing in it is for us
                for room_id, room in resp.rooms.join.items():
                    for event in room.timeline.events:
                        self.route(room_id, getattr(event, "source", {}))
            token = resp.next_batch
            if not ready:
                ready = True
                print(f"syncing as {self.s.router.user_id} with agent {self.s.agent.user_id}", flush=True)

    def route(self, room_id: str, event: Mapping[str, Any]) -> None:
        if room_id not in self.s.rooms or not for_the_bot(event, self.own):
            return
        by_router = self.bug == "router-answers"
        log.info("routing %s to %s", event.get("event_id"), "the router itself" if by_router else "the agent")
        speaker = Agent(self.client, self.agent.model, self.agent.model_name, self.agent.histories) if by_router \
            else self.agent
        task = asyncio.create_task(die_mid_turn(speaker, event) if self.bug == "die-mid-turn"
                                   else speaker.answer(room_id, event))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def main_async(s: Settings, bug: str | None, invite_agent: bool) -> int:
    model = openai.AsyncOpenAI(max_retries=0, timeout=120.0)
    router_client, agent_client = client_for(s.homeserver, s.router), client_for(s.homeserver, s.agent)
    router = Router(s, router_client, Agent(agent_client, model, s.model), bug)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    task = asyncio.create_task(router.run(invite_agent))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if task.done():
        print(f"router_agent_bot: {task.exception()}", file=sys.stderr)
        code = 1
    task.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    await router_client.close()
    await agent_client.close()
    await model.close()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Matrix bot of two accounts: a router and an answering agent.")
    parser.add_argument("--bug", choices=sorted(BUGS), help="turn on one deliberate defect")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("nio").setLevel(logging.WARNING)
    register = "MATRIX_QA_ACCOUNTS" not in os.environ and "MATRIX_QA_REGISTRATION_TOKEN" in os.environ
    try:
        agent = asyncio.run(register_agent(os.environ)) if register else None
        settings = settings_from_env(os.environ, agent)
    except ConfigError as exc:
        print(f"router_agent_bot: {exc}", file=sys.stderr)
        return 2
    if args.bug:
        log.warning("deliberate bug enabled: %s (%s)", args.bug, BUGS[args.bug])
    return asyncio.run(main_async(settings, args.bug, invite_agent=register))


if __name__ == "__main__":
    sys.exit(main())
