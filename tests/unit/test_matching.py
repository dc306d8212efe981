"""Which recorded exchange answers a request (qa.provider.matching): content after placeholders, order within
a session, and the nearest one with a diff when nothing matches."""

from __future__ import annotations

from typing import Any

from qa.provider.cassette import Exchange
from qa.provider.matching import Matcher, canonical_request, nearest_exchange, request_diff, session_of
from qa.provider.placeholders import Placeholders

SYSTEM = {"role": "system", "content": "be helpful"}


def body(*users: str, **extra: Any) -> dict[str, Any]:
    messages = [SYSTEM]
    for i, text in enumerate(users):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": text})
    return {"model": "m", "stream": True, "messages": messages, **extra}


def canon(b: dict[str, Any], token: str = "MQA-11111111") -> dict[str, Any]:
    return canonical_request(b, Placeholders({"token": token, "run": "abcdef"}))


def exchanges(*requests: dict[str, Any]) -> list[Exchange]:
    return [Exchange(i + 1, session_of(r), r, {"status": 200, "at_ms": 0}) for i, r in enumerate(requests)]


def test_canonical_request_keeps_what_the_model_reads() -> None:
    b = body("hi MQA-11111111", tools=[{"type": "function", "function": {"name": "exec"}}], temperature=0.3)
    b["messages"][1]["x_client_note"] = "ignored"
    c = canon(b)
    assert c == {"model": "m", "stream": True, "tools": [{"type": "function", "function": {"name": "exec"}}],
                 "messages": [SYSTEM, {"role": "user", "content": "hi {token}"}]}


def test_a_request_matches_its_recording_with_another_runs_markers() -> None:
    recorded = canon(body("say MQA-11111111"))
    matcher = Matcher(exchanges(recorded))
    assert matcher.match(canon(body("say MQA-22222222"), token="MQA-22222222")) is matcher.exchanges[0]


def test_changed_content_does_not_match() -> None:
    matcher = Matcher(exchanges(canon(body("say MQA-11111111"))))
    assert matcher.match(canon(body("shout MQA-11111111"))) is None
    changed_tools = canon(body("say MQA-11111111", tools=[{"type": "function", "function": {"name": "exec"}}]))
    assert matcher.match(changed_tools) is None
    assert matcher.match(canon({**body("say MQA-11111111"), "stream": False})) is None
    assert matcher.match(canon({**body("say MQA-11111111"), "model": "other"})) is None


def test_each_exchange_answers_once() -> None:
    request = canon(body("again"))
    matcher = Matcher(exchanges(request, request))
    first, second = matcher.match(request), matcher.match(request)
    assert (first.index, second.index) == (1, 2)  # type: ignore[union-attr]
    assert matcher.match(request) is None


def test_order_counts_within_a_session() -> None:
    one, two = canon(body("start")), canon(body("start", "more"))
    assert session_of(one) == session_of(two)
    matcher = Matcher(exchanges(one, two))
    assert matcher.match(two) is not None
    # The session has moved past exchange 1: asking it now is out of order.
    assert matcher.match(one) is None


def test_sessions_interleave_freely() -> None:
    a1, b1 = canon(body("room a")), canon(body("thread b"))
    a2 = canon(body("room a", "next"))
    assert session_of(a1) != session_of(b1)
    matcher = Matcher(exchanges(a1, a2, b1))
    assert [matcher.match(r).index for r in (b1, a1, a2)] == [3, 1, 2]  # type: ignore[union-attr]
    assert matcher.unused == []


def test_nearest_prefers_the_most_similar_unused_exchange() -> None:
    a, b = canon(body("reply with marker one")), canon(body("something else entirely"))
    ex = exchanges(a, b)
    assert nearest_exchange(canon(body("reply with marker two")), ex, set()) is ex[0]
    # Used already: an unused one is the likelier meant, even if less alike.
    assert nearest_exchange(canon(body("reply with marker two")), ex, {0}) is ex[1]
    assert nearest_exchange(a, [], set()) is None


def test_miss_shows_recorded_against_new_as_a_diff() -> None:
    matcher = Matcher(exchanges(canon(body("reply with only this exact marker: MQA-11111111"))))
    new = canon(body("reply with just this marker: MQA-11111111"))
    miss = matcher.miss(new, "canary.yaml")
    assert miss.nearest is matcher.exchanges[0]
    assert miss.diff[0] == "--- recorded (canary.yaml #1)"
    assert miss.diff[1] == "+++ this run"
    assert "-  content: 'reply with only this exact marker: {token}'" in miss.diff
    assert "+  content: 'reply with just this marker: {token}'" in miss.diff


def test_miss_on_an_empty_cassette_shows_the_request() -> None:
    miss = Matcher([]).miss(canon(body("hello")), "x.yaml")
    assert miss.nearest is None
    assert miss.diff[0] == "(the cassette holds no exchanges)"
    assert "  content: hello" in miss.diff


def test_diff_of_equal_requests_is_empty() -> None:
    r = canon(body("x"))
    assert request_diff(r, r, "x") == []


def test_tool_rounds_keep_the_call_and_its_result_and_drop_client_extras() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": "{}"}, "x_extra": 1}
    b = {"model": "m", "messages": [SYSTEM, "not a message", {"role": "user", "content": "run", "name": "driver"},
                                    {"role": "assistant", "content": None, "tool_calls": [call]},
                                    {"role": "tool", "tool_call_id": "call_1", "content": "MQA-11111111"}]}
    assert canon(b)["messages"] == [
        SYSTEM, {"role": "user", "content": "run", "name": "driver"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                              "function": {"name": "exec", "arguments": "{{}}"}}]},
        {"role": "tool", "content": "{token}", "tool_call_id": "call_1"}]
    assert canon(b)["stream"] is False


def test_a_session_does_not_depend_on_key_order() -> None:
    a = {"messages": [{"role": "user", "content": "x"}]}
    b = {"messages": [{"content": "x", "role": "user"}]}
    assert session_of(a) == session_of(b)
    assert len(session_of(a)) == 8 and int(session_of(a), 16) >= 0  # short hex: readable in a cassette


def test_nearest_is_the_most_similar_not_the_first() -> None:
    ex = exchanges(canon(body("something else entirely")), canon(body("reply with marker one")))
    assert nearest_exchange(canon(body("reply with marker two")), ex, set()) is ex[1]


def test_the_diff_is_exact_with_two_lines_of_context_and_keeps_unicode() -> None:
    recorded = canon(body("a", "b", "reacted 👍 c"))
    new = canon(body("a", "b", "reacted 👍 d"))
    assert request_diff(recorded, new, "x.yaml #1") == [
        "--- recorded (x.yaml #1)", "+++ this run", "@@ -13,3 +13,3 @@", "   content: answer 2", " - role: user",
        "-  content: reacted 👍 c", "+  content: reacted 👍 d"]


def test_nearest_among_equals_is_the_earliest() -> None:
    same = canon(body("recorded twice"))
    ex = exchanges(same, same)
    assert nearest_exchange(canon(body("recorded twice!")), ex, set()) is ex[0]


def test_another_api_is_named_first_and_never_matches_chat() -> None:
    b = body("say MQA-11111111")
    responses = canonical_request(b, Placeholders({"token": "MQA-11111111", "run": "abcdef"}), api="responses")
    assert list(responses) == ["api", "model", "stream", "messages"] and responses["api"] == "responses"
    assert {k: v for k, v in responses.items() if k != "api"} == canon(b) and "api" not in canon(b)
    matcher = Matcher(exchanges(canon(b)))
    assert matcher.match(responses) is None and matcher.match(canon(b)) is not None
