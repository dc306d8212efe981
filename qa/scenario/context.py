"""What a running scenario knows: its users, rooms, bot, markers and the events its steps named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.evidence.events import BotIdentity
from qa.evidence.pairing import Trigger

if TYPE_CHECKING:  # types only: the scenario model imports this module, and must load without the Matrix client
    from qa.actors import Actor
    from qa.harness.bot_process import BotUnderTest
    from qa.homeserver.base import Homeserver
    from qa.report.summary import NegativeCheck


class StepFailed(Exception):
    """A check did not hold. `seen` is the evidence the report shows under "what the harness saw"."""

    def __init__(self, expected: str, seen: list[str] | None = None, hints: list[str] | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.seen = seen or []
        self.hints = hints or []


@dataclass
class Ref:
    """An event a step named with `id`, so later steps can reply to, react to or thread under it."""

    room_id: str
    event_id: str
    thread_root: str | None
    sent_mono_ms: float
    actor: str | None = None
    body: str | None = None  # the body as sent, to find the model request that answered it
    text: str | None = None  # what the actor typed (markers expanded, no mention prefix): journal evidence
    mentions: tuple[str, ...] = ()  # user ids the message intentionally mentions (an edit says who is new)
    latency_ms: float | None = None  # a bot reply's: trigger sent -> reply seen, less the model's time
    # A sent message's: when the homeserver had it (its send returned), for a check of what was under way then.
    landed_mono_ms: float | None = None

    def as_trigger(self) -> Trigger:
        return Trigger(self.event_id, self.room_id, self.text, self.sent_mono_ms)


@dataclass
class ScenarioContext:
    scenario: Any
    homeserver: Homeserver
    provider: Any | None  # MockProvider when mocked; its journal is evidence
    actors: dict[str, Actor]
    bot: BotUnderTest
    bot_user_id: str
    bot_name: str
    rooms: dict[str, str]
    markers: Any
    artifact_dir: Path
    refs: dict[str, Ref] = field(default_factory=dict)
    reply_latencies_ms: list[float] = field(default_factory=list)
    negative_checks: list[NegativeCheck] = field(default_factory=list)
    trace_start: int = 0
    # The evidence the running step rested on (StepResult.method); a step sets it, the runner records it.
    method: str | None = None
    # Bot messages already paired with a trigger (reply id -> trigger id), so a weaker pairing never hands one
    # out twice, and reply counts include them.
    claimed: dict[str, str] = field(default_factory=dict)
    # Checks that must still hold when the scenario ends (a reply edited later, an unwanted reply that came
    # late): each returns a problem, or None.
    final_checks: list[Any] = field(default_factory=list)
    # What the look after the bot's exit cannot judge (qa.scenario.fence): each takes the first look's mark in
    # the observer's stream and returns why its check is NOT CHECKED, or None.
    after_exit_notes: list[Any] = field(default_factory=list)
    # The messages expect_no_reply checked with a trace, with their step ids (Ref, step id): the sends the bot
    # traced without an event id are the scenario's, so their untraced answers share them (steps/silence.py).
    silenced: list[tuple[Ref, str]] = field(default_factory=list)
    # The scenario's private state dir (crypto stores, the bot's password file) and --include-bodies (E2EE steps).
    state_dir: Path | None = None
    include_bodies: bool = False
    # --reply-edit-wait: the most expect_reply waits for an edit that finishes a wrong-bodied reply (None: the
    # rest of the step's time; 0: none, for a bot that never edits its replies).
    reply_edit_wait_s: float | None = None
    # --step-timeout-cap: the most a step waits for what it looks for (StepBase.wait_s; None: its own timeout).
    step_timeout_cap_s: float | None = None
    # set_bot_config: the changes so far -> the bot's config text rendered again (None: the bot has no config).
    rerender: Any = None
    config_changes: list[Any] = field(default_factory=list)
    # room id -> where in the observer's stream the last invite/kick/leave step began (expect_membership)
    membership_marks: dict[str, int] = field(default_factory=dict)
    fault_proxy: Any | None = None  # qa.harness.fault_proxy.FaultProxy when the scenario declares client faults
    # qa.scenario.appservice_bot.AppserviceBot for an application-service bot: its push faults and their hits.
    appservice: Any | None = None
    # Every account the bot speaks with, by name ("bot": the main one; a bot file's `accounts`, issue 33).
    bot_accounts: dict[str, str] = field(default_factory=dict)
    # Which of the bot's accounts sent the message the running step checked (StepResult.account).
    account: str | None = None
    # `registration: token`: the accounts the bot registers itself have localparts starting with this.
    registered_prefix: str | None = None
    # The peer bot (`peer_bot:`, qa.scenario.peer): its process, Matrix id and name in the scenario.
    peer: BotUnderTest | None = None
    peer_user_id: str = ""
    peer_name: str = ""
    # The session the harness made for the bot's account (its launch token): set_m_direct writes as the bot with it.
    bot_access_token: str | None = None

    @property
    def bot_ids(self) -> BotIdentity:
        """A message from any of these is the bot's."""
        return BotIdentity(frozenset({self.bot_user_id, *self.bot_accounts.values()}), self.registered_prefix)

    @property
    def several_accounts(self) -> bool:
        """Whether the bot may speak with more than its main account (then the report says which spoke)."""
        return bool(self.bot_accounts) or bool(self.registered_prefix)

    def account_of(self, user_id: Any) -> str | None:
        """The bot account's name for a Matrix id ("bot" for the main one, the localpart of one it registered);
        None for anyone else."""
        if user_id == self.bot_user_id:
            return "bot"
        named = next((name for name, uid in self.bot_accounts.items() if uid == user_id), None)
        if named is None and user_id in self.bot_ids:
            return str(user_id)[1:].split(":", 1)[0]
        return named

    def is_account(self, user_id: Any, name: str) -> bool:
        """Whether `user_id` is the bot's account `name` (`from:`): "bot", a bot file's account, else an account
        the bot registered itself whose name is `name` (qa.evidence.events.BotIdentity.registered_name)."""
        if name == "bot" or name in self.bot_accounts:
            return user_id == self.bot_accounts.get(name, self.bot_user_id)
        return self.bot_ids.registered_name(user_id) == name

    def account_wanted(self, name: str) -> str:
        """Who `from: name` means, as a failure message says it."""
        if name == "bot" or name in self.bot_accounts:
            return self.bot_accounts.get(name, self.bot_user_id)
        if self.registered_prefix:
            return f"one it registered itself: @{self.registered_prefix}{name}…"
        return "an account the bot does not have"

    def user_id_of(self, name: str) -> str:
        if name == "bot":
            return self.bot_user_id
        return self.actors[name].user_id

    def observer(self) -> Actor:
        """Whose eyes check what the room shows: the first actor (the driver, by convention)."""
        return next(iter(self.actors.values()))
