"""The agent's membership decisions: which invites it joins, what a (re)joined room's backlog is, who kicked it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.agent.config import AgentConfig
from qa.agent.membership import (
    Membership,
    backlog_cutoff,
    decide_invite,
    direct_partner,
    invite_facts,
    left_room,
    parse_m_direct,
)
from qa.kernel.trace import Trace

BOT = "@bot:hs"


@pytest.mark.parametrize(("inviter", "configured", "auto_join", "join", "reason"), [
    ("@x:hs", True, "off", True, "configured-room"),
    ("@x:hs", True, "allowlist", True, "configured-room"),
    ("@x:hs", False, "always", True, "auto-join-always"),
    ("@a:hs", False, "allowlist", True, "inviter-allowed"),
    ("@x:hs", False, "allowlist", False, "inviter-not-allowed"),
    ("@a:hs", False, "off", False, "auto-join-off"),
])
def test_invites_follow_auto_join(inviter: str, configured: bool, auto_join: str, join: bool, reason: str) -> None:
    decision = decide_invite(inviter, configured, auto_join, ["@a:hs"])
    assert (decision.join, decision.reason) == (join, reason)


def _member(user: str, membership: str, sender: str | None = None, **content: Any) -> Any:
    source = {"type": "m.room.member", "state_key": user, "sender": sender or user,
              "content": {"membership": membership, **content}}
    return SimpleNamespace(source=source, state_key=user, sender=sender or user, membership=membership,
                           content=source["content"])


def _message(n: int) -> Any:
    return SimpleNamespace(source={"type": "m.room.message", "event_id": f"$m{n}", "content": {"body": str(n)}})


def test_invite_facts_read_the_inviter_and_is_direct_from_our_own_invite() -> None:
    state = [_member("@other:hs", "join"), _member(BOT, "invite", sender="@dan:hs", is_direct=True)]
    assert invite_facts(state, BOT) == ("@dan:hs", True)
    assert invite_facts([_member(BOT, "invite", sender="@dan:hs")], BOT) == ("@dan:hs", False)
    assert invite_facts([_member("@other:hs", "invite", sender="@dan:hs", is_direct=True)], BOT) == ("", False)


def test_what_came_before_our_latest_join_in_a_batch_is_backlog() -> None:
    assert backlog_cutoff([_message(1), _message(2)], BOT) == 0  # no join in it: an ordinary batch
    assert backlog_cutoff([], BOT) == 0  # an empty timeline (a room with only state in the batch)
    assert backlog_cutoff([_message(1), _member(BOT, "join"), _message(2)], BOT) == 2
    # A kick and a rejoin inside one batch: everything up to the rejoin is backlog.
    events = [_member(BOT, "join"), _message(1), _member(BOT, "leave", sender="@dan:hs"), _message(2),
              _member(BOT, "join"), _message(3)]
    assert backlog_cutoff(events, BOT) == 5
    assert backlog_cutoff([_message(1), _member("@dan:hs", "join")], BOT) == 0  # someone else's join
    assert backlog_cutoff([_message(1), _member(BOT, "join")], BOT) == 2  # the join is the batch's last event
    assert backlog_cutoff([_member(BOT, "join"), _message(1)], BOT) == 1  # ... or its first


def test_left_room_names_who_removed_the_bot_and_why() -> None:
    kicked = [_message(1), _member(BOT, "leave", sender="@dan:hs", reason="bye")]
    assert left_room(kicked, BOT) == {"membership": "leave", "by": "@dan:hs", "reason": "bye"}
    assert left_room([_member(BOT, "ban", sender="@dan:hs")], BOT) == {"membership": "ban", "by": "@dan:hs"}
    assert left_room([_message(1), _member("@dan:hs", "leave")], BOT) is None


def _config(**extra: Any) -> AgentConfig:
    return AgentConfig.model_validate({"homeserver": "http://hs", "userId": BOT, "stateDir": "/s",
                                       "rooms": {"!known:hs": {}}, "model": {"baseUrl": "http://m", "model": "x"},
                                       **extra})


class _Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def join(self, room_id: str) -> Any:
        self.calls.append(("join", room_id))
        return SimpleNamespace()

    async def room_leave(self, room_id: str) -> Any:
        self.calls.append(("leave", room_id))
        return SimpleNamespace()


async def test_membership_joins_declines_traces_and_remembers(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.jsonl"
    trace = Trace(trace_path)
    membership = Membership(tmp_path, BOT, trace)
    client = _Client()
    invites = {
        "!known:hs": SimpleNamespace(invite_state=[_member(BOT, "invite", sender="@x:hs")]),
        "!dm:hs": SimpleNamespace(invite_state=[_member(BOT, "invite", sender="@a:hs", is_direct=True)]),
        "!spam:hs": SimpleNamespace(invite_state=[_member(BOT, "invite", sender="@x:hs")]),
    }
    config = _config(autoJoin="allowlist", autoJoinAllowlist=["@a:hs"])
    assert await membership.on_invites(client, invites, config) == {"!known:hs", "!dm:hs"}
    membership.on_leaves({"!gone:hs": SimpleNamespace(timeline=SimpleNamespace(events=[
        _member(BOT, "leave", sender="@dan:hs", reason="r")])),
        "!spam:hs": SimpleNamespace(timeline=SimpleNamespace(events=[_member(BOT, "leave")]))})
    trace.close()
    assert client.calls == [("join", "!known:hs"), ("join", "!dm:hs"), ("leave", "!spam:hs")]
    records = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert [(r["type"], r["roomId"], r.get("decision"), r.get("reason")) for r in records] == [
        ("invite", "!known:hs", "joined", "configured-room"),
        ("invite", "!dm:hs", "joined", "inviter-allowed"),
        ("invite", "!spam:hs", "declined", "inviter-not-allowed"),
        ("membership", "!gone:hs", None, "r"),  # our own decline is not traced a second time
    ]
    # A restarted bot still serves the room it joined by invite, and still knows the DM.
    again = Membership(tmp_path, BOT, Trace(None))
    assert (again.runtime_rooms, again.direct_rooms) == ({"!dm:hs"}, {"!dm:hs"})
    assert Membership(tmp_path, BOT, Trace(None), forget=True).runtime_rooms == set()


def test_room_policy_defaults_for_runtime_rooms_and_the_dm_rule() -> None:
    config = _config(defaults={"requireMention": False, "allowlist": ["@a:hs"]}, dmRequireMention=False)
    assert config.room_policy("!other:hs") is None  # neither listed nor joined by invite
    runtime = config.room_policy("!other:hs", joined_at_runtime=True)
    assert runtime is not None and not runtime.require_mention and runtime.allowlist == frozenset({"@a:hs"})
    listed = config.room_policy("!known:hs")
    assert listed is not None and listed.require_mention
    dm = config.room_policy("!known:hs", direct=True)
    assert dm is not None and not dm.require_mention
    strict = _config(dmRequireMention=True).room_policy("!known:hs", direct=True)
    assert strict is not None and strict.require_mention


DRIVER, ALICE = "@driver:hs", "@alice:hs"


def test_m_direct_parsing_keeps_only_well_formed_entries() -> None:
    assert parse_m_direct(None) == {} and parse_m_direct(["!r:hs"]) == {}
    content = {DRIVER: ["!a:hs", 7, "!b:hs"], ALICE: "!c:hs", 3: ["!d:hs"], "@e:hs": []}
    assert parse_m_direct(content) == {DRIVER: ["!a:hs", "!b:hs"], "@e:hs": []}


@pytest.mark.parametrize(("m_direct", "joined", "count", "partner"), [
    ({DRIVER: ["!r:hs"]}, {BOT, DRIVER}, 2, DRIVER),  # the bot and the listed user alone: a direct chat
    ({DRIVER: ["!other:hs"]}, {BOT, DRIVER}, 2, None),  # m.direct does not list this room
    ({DRIVER: ["!r:hs"]}, {BOT, DRIVER, ALICE}, 3, None),  # three people are never a direct chat
    ({DRIVER: ["!r:hs"]}, {BOT, DRIVER}, 3, None),  # the count says more joined than the client has loaded
    ({ALICE: ["!r:hs"]}, {BOT, DRIVER}, 2, None),  # stale: the listed user left, someone else is here
    ({DRIVER: ["!r:hs"]}, {DRIVER, ALICE}, 2, None),  # the bot itself is not joined
    ({BOT: ["!r:hs"]}, {BOT, DRIVER}, 2, None),  # an entry naming the bot itself names no partner
    ({BOT: ["!r:hs"], DRIVER: ["!r:hs"]}, {BOT, DRIVER}, 2, DRIVER),
    ({}, {BOT, DRIVER}, 2, None),
])
def test_m_direct_is_a_hint_confirmed_by_the_rooms_members(m_direct: dict[str, list[str]], joined: set[str],
                                                            count: int, partner: str | None) -> None:
    assert direct_partner(m_direct, "!r:hs", BOT, joined, count) == partner


def test_membership_takes_m_direct_from_account_data_and_checks_it_against_the_room(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.jsonl"
    trace = Trace(trace_path)
    membership = Membership(tmp_path, BOT, trace)
    members = {"!pair:hs": (2, {BOT, DRIVER}), "!crowd:hs": (3, {BOT, DRIVER, ALICE}), "!left:hs": (2, {BOT, DRIVER})}
    membership.room_members = members.get
    # Before the Matrix edge says who is in a room, no room is a DM by m.direct (and asking does not fail).
    fresh = Membership(tmp_path, BOT, Trace(None))
    fresh.m_direct = {DRIVER: ["!pair:hs"]}
    assert not fresh.is_direct("!pair:hs")
    assert not membership.is_direct("!pair:hs")  # no m.direct yet
    membership.on_account_data([SimpleNamespace(type="m.tag", content={}),
                                SimpleNamespace(type="m.direct", content={DRIVER: ["!pair:hs", "!crowd:hs"],
                                                                          ALICE: ["!left:hs", "!pair:hs"]})])
    assert membership.is_direct("!pair:hs")
    assert not membership.is_direct("!crowd:hs") and not membership.is_direct("!left:hs")
    assert not membership.is_direct("!unknown:hs")  # a room the client does not know
    # The test-only trust-m-direct: whatever m.direct lists, whoever is in it.
    assert membership.is_direct("!crowd:hs", trust_m_direct=True)
    assert membership.is_direct("!left:hs", trust_m_direct=True)
    assert not membership.is_direct("!unknown:hs", trust_m_direct=True)
    # The test-only m-direct-any-pair: listed for anyone and two joined, though the one listed left (!left's
    # entry names alice, who is not in it); three joined, or a room not listed, still no DM.
    assert membership.is_direct("!left:hs", any_pair=True) and membership.is_direct("!pair:hs", any_pair=True)
    assert not membership.is_direct("!crowd:hs", any_pair=True)
    assert not membership.is_direct("!unknown:hs", any_pair=True)
    # An invite flagged is_direct decides on its own, m.direct or not.
    membership.direct_rooms.add("!unknown:hs")
    assert membership.is_direct("!unknown:hs")
    # A later m.direct replaces the whole map.
    membership.on_account_data([SimpleNamespace(type="m.direct", content={ALICE: ["!crowd:hs"]})])
    assert not membership.is_direct("!pair:hs")
    trace.close()
    records = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert [(r["type"], r["users"], r["rooms"]) for r in records] == [("m.direct", 2, 3), ("m.direct", 1, 1)]


class _RefusingClient(_Client):
    async def join(self, room_id: str) -> Any:
        self.calls.append(("join", room_id))
        return type("JoinError", (), {"message": "no such room"})()


async def test_a_refused_join_is_traced_with_the_servers_reason_and_not_remembered(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.jsonl"
    trace = Trace(trace_path)
    membership = Membership(tmp_path, BOT, trace)
    invites = {"!known:hs": SimpleNamespace(invite_state=[_member(BOT, "invite", sender="@x:hs", is_direct=True)])}
    assert await membership.on_invites(_RefusingClient(), invites, _config()) == set()
    # Our own decline first, a removal after it: the decline is skipped, the removal still traced.
    membership.on_leaves({"!spam:hs": SimpleNamespace(timeline=SimpleNamespace(events=[_member(BOT, "leave")])),
                          "!gone:hs": SimpleNamespace(timeline=SimpleNamespace(events=[
                              _member(BOT, "leave", sender="@dan:hs")]))})
    trace.close()
    records = [json.loads(line) for line in trace_path.read_text().splitlines()]
    assert [(r["type"], r["roomId"], r.get("error")) for r in records] == [
        ("invite", "!known:hs", "no such room"), ("membership", "!gone:hs", None)]
    assert membership.direct_rooms == set()
    # An invite whose event names no sender: nobody to credit, not a made-up name.
    assert invite_facts([SimpleNamespace(state_key=BOT, membership="invite", content=None)], BOT) == ("", False)
