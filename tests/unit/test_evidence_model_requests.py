"""qa.evidence.model_requests without servers: which traced model requests answered a message, which journal
rounds carry its text, and what they lack or carry against a step."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from qa.evidence.model_requests import (
    find_model_request,
    model_request_problems,
    model_request_windows,
    request_lines,
    rounds_carrying,
)


def rec(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


TURN = [rec("turn.start", eventId="$ask", attempt=1), rec("model.request.start", attempt=1, requestId="r1", t=10),
        rec("model.request.end", requestId="r1", t=20), rec("model.request.start", attempt=1, requestId="r2", t=30),
        rec("model.request.end", requestId="r2", t=40), rec("turn.end", attempt=1)]


def test_windows_pair_each_request_of_the_turn_once_it_has_ended() -> None:
    windows = model_request_windows(TURN, "$ask")
    assert windows == [(TURN[1], TURN[2]), (TURN[3], TURN[4])]
    assert model_request_windows(TURN[:-1], "$ask") is None  # still running
    assert model_request_windows(TURN, "$other") is None


def test_windows_leave_out_other_turns_and_unfinished_requests() -> None:
    other = [rec("turn.start", eventId="$x", attempt=2), rec("model.request.start", attempt=2, requestId="o"),
             rec("model.request.end", requestId="o"), rec("turn.end", attempt=2)]
    open_request = [rec("model.request.start", attempt=1, requestId="r3")]
    assert model_request_windows(TURN + other + open_request, "$ask") == [(TURN[1], TURN[2]), (TURN[3], TURN[4])]
    no_requests = [rec("turn.start", eventId="$ask", attempt=1), rec("turn.end", attempt=1)]
    assert model_request_windows(no_requests, "$ask") is None
    assert model_request_windows([rec("turn.end", attempt=None)], "$ask") is None


@dataclass
class Entry:
    """What the judgement reads of a mock-provider JournalEntry."""

    id: str
    texts: list[str] = field(default_factory=list)
    images: int = 0
    is_chat: bool = True
    state: str = "done"
    latest_user: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    def contains(self, text: str) -> bool:
        return any(text in t for t in self.texts)


def test_rounds_carrying_are_finished_chat_requests_with_the_text_in_the_latest_user_message() -> None:
    journal = [Entry("a", latest_user="say ask now"), Entry("b", latest_user="other"),
               Entry("c", latest_user="ask", state="in_flight"), Entry("d", latest_user="ask", is_chat=False),
               Entry("e", latest_user=None), Entry("f", latest_user="ask again")]
    assert [e.id for e in rounds_carrying(journal, "ask")] == ["a", "f"]
    assert rounds_carrying(journal, "") == []


def test_model_request_problems_name_each_text_and_the_image_count() -> None:
    found = [Entry("a", ["one", "secret"], images=1), Entry("b", ["two"], images=2)]
    assert model_request_problems(found, ["one", "two"], ["three"], 2) == []
    assert model_request_problems(found, ["four", "one"], ["secret", "tw"], 3) == [
        "does not carry 'four'", "carries 2 image content part(s), expected 3",
        "carries 'secret', which it must not", "carries 'tw', which it must not"]
    assert model_request_problems(found, [], [], None) == []
    assert model_request_problems([], [], [], 0) == []
    assert model_request_problems([], ["x"], [], 1) == ["does not carry 'x'",
                                                       "carries 0 image content part(s), expected 1"]


def test_request_lines_show_every_message_cut_at_120() -> None:
    long = "x" * 200
    entry = Entry("r1", messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": long}])
    assert request_lines([entry, Entry("r2", messages=[{"content": None}])]) == [
        "request r1 system: 'sys'", f"request r1 user: {long[:120]!r}", "request r2 None: 'None'"]


@dataclass
class Timed:
    """What find_model_request reads of a journal entry."""

    id: str
    started_at: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    is_chat: bool = True


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]


@pytest.mark.parametrize(("started", "inside"), [(99.0, True), (98.9, False), (111.0, True), (111.1, False),
                                                 (100.0, True), (110.0, True)])
def test_find_model_request_allows_a_millisecond_of_rounding_at_each_end(started: float, inside: bool) -> None:
    found = find_model_request([Timed("it", started, said("ask"))], 100.0, 110.0, None)
    assert (found is not None) is inside


def test_find_model_request_narrows_by_body_only_when_given_and_counts_only_chat_requests() -> None:
    journal = [Timed("ask", 101.0, said("ask")), Timed("other", 102.0, said("other"))]
    assert find_model_request(journal, 100.0, 110.0, "ask").id == "ask"
    assert find_model_request(journal, 100.0, 110.0, None).id == "other"
    not_chat = SimpleNamespace(id="models", started_at=103.0, messages=[])
    assert find_model_request([*journal, not_chat], 100.0, 110.0, None).id == "other"


def test_rounds_carrying_a_text_never_match_a_round_without_a_user_message() -> None:
    assert rounds_carrying([Entry("a", latest_user=None)], "X") == []


def test_an_entry_that_says_nothing_of_images_carried_none() -> None:
    entry = SimpleNamespace(id="a", contains=lambda _text: False)
    assert model_request_problems([entry], [], [], 0) == []


# --- issue 28: what a reply timeout says ------------------------------------------------------------------------


def _req(rid: str, latest: str | None, *, state: str = "done", reply: str | None = None, error: bool = False,
         status: int | None = None, chat: bool = True) -> Any:
    return SimpleNamespace(id=rid, latest_user=latest, state=state, is_chat=chat, status=status,
                           reply=SimpleNamespace(text=reply) if reply is not None else None,
                           error=object() if error else None)


def test_a_reply_timeout_says_whether_the_model_was_ever_asked_about_the_trigger() -> None:
    from qa.evidence.model_requests import journal_knows

    assert journal_knows(None, "ask X") == \
        "provider journal: none (a live model keeps none), so whether the model was asked is unknown"
    assert journal_knows([], None) == "provider journal: the trigger has no text to look for"
    other = _req("req-1", "something else", reply="hi")
    models = _req("req-9", "ask X", chat=False)
    assert journal_knows([other, models], "ask X") == "provider journal: none of its 1 model request(s) carried " \
        "the trigger's text: the bot never asked the model about it"
    assert journal_knows([other, _req("req-2", "bot: ask X", reply="A" * 100)], "ask X") == \
        f"provider journal: 1 model request(s) carried the trigger's text; the last (req-2) was answered {'A' * 80!r}"
    assert journal_knows([_req("req-2", "ask X", error=True, status=500), _req("req-3", "ask X", state="in_flight")],
                         "ask X") == "provider journal: 2 model request(s) carried the trigger's text; the last " \
        "(req-3) is still in flight"
    assert journal_knows([_req("req-2", "ask X", error=True, status=500)], "ask X").endswith(
        "the last (req-2) was answered with an error (HTTP 500)")
    assert journal_knows([_req("req-2", "ask X")], "ask X").endswith("the last (req-2) ended without an answer")
    assert journal_knows([_req("req-2", None)], "ask X").startswith("provider journal: none of its 1")
    assert journal_knows([_req("req-2", None)], "XX").startswith("provider journal: none of its 1")
    assert journal_knows([_req("req-2", "ask X", reply="")], "ask X").endswith("the last (req-2) was answered ''")


def test_each_marker_is_traced_back_to_the_step_that_sent_it() -> None:
    from qa.evidence.model_requests import marker_origins

    sent = {"step 'ask'": "reply with MQA-0000000a", "step 'later'": "MQA-0000000b and MQA-0000000a", "x": None}
    lines = ["bot said MQA-0000000a", "request: MQA-0000000b MQA-0000000a", "MQA-0000000c", "MQA-xyz"]
    assert marker_origins(lines, sent) == ["MQA-0000000a = step 'ask' and step 'later'",
                                           "MQA-0000000b = step 'later'",
                                           "MQA-0000000c = no message of this scenario"]
    assert marker_origins([], sent) == []
