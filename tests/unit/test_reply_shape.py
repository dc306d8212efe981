"""Pure pieces of the conversation steps: the reply-relation check, finding the model request that answered a
message, and the schema rules for the steps that use them. No servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from qa.agent.sender import reply_content
from qa.evidence.model_requests import find_model_request
from qa.evidence.replies import check_reply_shape
from qa.scenario.context import Ref
from qa.scenario.schema import Scenario
from qa.scenario.steps.model_requests import ExpectModelRequest

TRIGGER = Ref(room_id="!r:hs", event_id="$ask", thread_root="$root", sent_mono_ms=0.0)
THREADED = {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True, "m.in_reply_to": {"event_id": "$ask"}}


def reply(relates: dict[str, Any] | None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": "MQA-00000000"}
    if relates is not None:
        content["m.relates_to"] = relates
    return {"type": "m.room.message", "event_id": "$reply", "content": content}


SHAPES = [
    # (case, m.relates_to of the reply, expected thread root, top_level, problem fragments; none = fine)
    ("threaded reply, as specified", THREADED, "$root", False, []),
    ("threaded reply in the wrong thread", {**THREADED, "event_id": "$other"}, "$root", False, ["thread root $other"]),
    ("threaded reply without is_falling_back", {k: v for k, v in THREADED.items() if k != "is_falling_back"},
     "$root", False, ["is_falling_back"]),
    ("is_falling_back must be true, not truthy", {**THREADED, "is_falling_back": "yes"}, "$root", False,
     ["is_falling_back"]),
    ("threaded reply to the root instead of the trigger", {**THREADED, "m.in_reply_to": {"event_id": "$root"}},
     "$root", False, ["m.in_reply_to $root"]),
    ("threaded reply without m.in_reply_to", {k: v for k, v in THREADED.items() if k != "m.in_reply_to"},
     "$root", False, ["m.in_reply_to None"]),
    ("top-level reply where a thread was expected", None, "$root", False, ["expected rel_type m.thread"]),
    ("rich reply where a thread was expected", {"m.in_reply_to": {"event_id": "$ask"}}, "$root", False,
     ["expected rel_type m.thread"]),
    ("top-level reply, as specified", None, None, True, []),
    ("rich reply is still top-level", {"m.in_reply_to": {"event_id": "$ask"}}, None, True, []),
    ("thread reply where top-level was expected", THREADED, None, True, ["not in a thread"]),
    ("an edit is not a top-level reply", {"rel_type": "m.replace", "event_id": "$x"}, None, True,
     ["not in a thread"]),
    ("no shape asked for", THREADED, None, False, []),
]


@pytest.mark.parametrize(("relates", "problem"), [
    ({"m.in_reply_to": {"event_id": "$ask"}}, True), ({}, True), (None, False)])
def test_no_relation_means_no_m_relates_to_at_all(relates: dict[str, Any] | None, problem: bool) -> None:
    found = check_reply_shape(reply(relates), TRIGGER, None, True, no_relation=True)
    assert bool(found) is problem and all("no m.relates_to" in p for p in found)


@pytest.mark.parametrize(("case", "relates", "thread", "top_level", "problems"), SHAPES, ids=[s[0] for s in SHAPES])
def test_check_reply_shape(
    case: str, relates: dict[str, Any] | None, thread: str | None, top_level: bool, problems: list[str]
) -> None:
    found = check_reply_shape(reply(relates), TRIGGER, thread, top_level)
    assert len(found) == len(problems), found
    for fragment, problem in zip(problems, found, strict=True):
        assert fragment in problem


@pytest.mark.parametrize(("root", "top_level"), [("$root", False), (None, True)])
def test_the_bots_own_reply_content_passes_the_check(root: str | None, top_level: bool) -> None:
    """The agent's reply builder and the harness's check agree on the shape the issue specifies."""
    content = reply_content("MQA-00000000", root, "$ask")
    assert check_reply_shape({"content": content}, TRIGGER, root, top_level) == []


@dataclass
class Entry:
    """Just what find_model_request reads from a mock-provider JournalEntry."""

    id: str
    started_at: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    is_chat: bool = True


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]


def test_find_model_request_takes_the_request_inside_the_traced_window() -> None:
    journal = [Entry("before", 99.0, user("ask")), Entry("it", 105.0, user("ask")), Entry("after", 121.0, user("ask"))]
    assert find_model_request(journal, 100.0, 110.0, "ask").id == "it"


def test_find_model_request_narrows_by_body_when_sessions_overlap_and_prefers_the_last_retry() -> None:
    journal = [Entry("other-session", 104.0, user("other")), Entry("try-1", 105.0, user("ask")),
               Entry("models-list", 106.0, is_chat=False), Entry("try-2", 107.0, user("ask"))]
    assert find_model_request(journal, 100.0, 110.0, "ask").id == "try-2"
    assert find_model_request(journal, 100.0, 110.0, "unknown body").id == "try-2"  # body can't help: last one
    assert find_model_request(journal, 200.0, 210.0, "ask") is None


def test_expect_model_request_needs_something_to_check() -> None:
    with pytest.raises(ValidationError, match="contains"):
        ExpectModelRequest(to="ask")
    assert ExpectModelRequest(to="ask", excludes=["{token}"]).excludes == ["{token}"]


def scenario(*steps: dict[str, Any]) -> Scenario:
    return Scenario.model_validate({"id": "s", "title": "t", "profiles": ["fast"], "steps": list(steps)})


def test_control_message_mentions_the_bot_unless_told_otherwise() -> None:
    send = {"send": {"as": "driver", "body": "hi", "id": "x"}}
    default = scenario(send, {"expect_no_reply": {"to": "x", "control": {"as": "driver", "body": "c"}}})
    silent = scenario(send, {"expect_no_reply": {"to": "x", "control": {"as": "driver", "body": "c", "mention": None}}})
    assert default.steps[1].control.mention == "bot"
    assert silent.steps[1].control.mention is None


def test_send_mention_style_is_pill_or_text() -> None:
    ok = scenario({"send": {"as": "driver", "body": "hi", "mention": "bot", "mention_style": "text"}})
    assert ok.steps[0].mention_style == "text"
    with pytest.raises(ValidationError, match="mention_style"):
        scenario({"send": {"as": "driver", "body": "hi", "mention": "bot", "mention_style": "shout"}})
