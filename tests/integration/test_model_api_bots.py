"""Bots on the other model APIs, tested through their bot files: the OpenAI Responses bot and the Anthropic bot of
tests/bots pass the generic scenarios against the mock and the committed cassettes, and two of them against a
replay of cassettes recorded from the independent stand-in model (tests/openai_standin.py); their buggy variants
fail readably; `expect_model_request` and the lock evidence's model I/O come from the journal for both APIs, and
fail when the journal loses the entries.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from qa.provider import cassette as cassettes
from qa.provider.server import ModelServer
from tests.integration.conftest import MUTANT_STEP_CAP_S, REPO, RunResult
from tests.openai_standin import OpenAIStandIn

pytestmark = pytest.mark.integration

BOTS = Path(__file__).resolve().parents[1] / "bots"
GENERIC = ["canary", "matrix-mention-gating", "matrix-thread-follow-up"]
BOT = {"responses": "responses-reply-bot", "anthropic": "anthropic-reply-bot"}
PATH = {"responses": "/v1/responses", "anthropic": "/v1/messages"}
API = pytest.mark.parametrize("api", ["responses", "anthropic"])
# What the record/replay test records: a first turn and a continued conversation (the thread's follow-up, with
# `previous_response_id` for the Responses API and the journal's model-request check), which is what the API's
# recording and replay consist of. matrix-mention-gating is left out there: it records no exchange of another
# shape (its two answered controls are a first turn and a continued one at the room's top level) and is the longest
# of GENERIC (its quiet windows grow with the stand-in's reply latency: 52 s of the 142 s test, -n 0 at load 12);
# the mock and committed-cassette tests still run it on each API.
RECORDED = ["canary", "matrix-thread-follow-up"]


def bot_file(api: str, variant: str = "") -> Path:
    return BOTS / f"{BOT[api]}{'-' + variant if variant else ''}.yaml"


def model_requests(result: RunResult) -> list[dict]:
    journal = json.loads((result.dir / "provider-journal.json").read_text())
    return [e for e in journal if e["api"] is not None]


def assert_generic_pass(result: RunResult, api: str, scenario_ids: list[str] = GENERIC) -> None:
    assert result.code == 0, result.report
    for scenario_id in scenario_ids:
        assert result.scenario(scenario_id)["status"] == "pass", result.scenario(scenario_id)
    follow_up = result.scenario("matrix-thread-follow-up")["steps"][-1]
    assert follow_up["kind"] == "expect_model_request" and follow_up["method"] == "journal", follow_up


@API
async def test_the_generic_scenarios_pass_against_the_mock(run_qa, api: str) -> None:
    result = await run_qa(*GENERIC, bot_file=bot_file(api))
    assert_generic_pass(result, api)
    requests = model_requests(result)
    assert requests and {e["api"] for e in requests} == {api}
    assert all(e["path"].endswith(PATH[api]) and e["status"] == 200 and e["rule"] for e in requests)
    assert all(e["messages"][0]["role"] == "system" for e in requests), "instructions / system come first"


@API
async def test_the_buggy_variants_fail_with_what_was_wrong(run_qa, api: str) -> None:
    loud = await run_qa("matrix-mention-gating", bot_file=bot_file(api, "answer-unmentioned"))
    assert loud.code == 1
    scenario = loud.scenario("matrix-mention-gating")
    check = scenario["negativeChecks"][0]
    assert check["method"] == "order" and check["unwantedReplies"], check
    assert check["unwantedReplies"][0] in "\n".join(scenario["failure"]["seen"])
    assert check["unwantedReplies"][0] in loud.report

    flat = await run_qa("matrix-thread-follow-up", bot_file=bot_file(api, "thread-top-level"))
    assert flat.code == 1
    failure = flat.scenario("matrix-thread-follow-up")["failure"]
    assert failure["stepKind"] == "expect_reply"
    assert any("expected rel_type m.thread" in line for line in failure["seen"]), failure
    assert "expected rel_type m.thread" in flat.report


@API
async def test_recorded_from_the_standin_and_replayed_without_it(run_qa, api: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-standin-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    standin = OpenAIStandIn(key)
    await standin.start()
    directory = tmp_path / "cassettes"
    try:
        recorded = await run_qa(*RECORDED, bot_file=bot_file(api), provider="live", model="standin-1",
                                base_url=standin.base_url, record_dir=directory)
    finally:
        await standin.stop()
    assert recorded.code == 0, recorded.report
    assert set(standin.apis_seen) == {api}, "the bot reached the stand-in through the proxy, in its own API"
    signed = f"x-api-key {key}" if api == "anthropic" else f"Bearer {key}"
    assert signed in standin.auth_seen, "the proxy added the key the bot never held"
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.yaml" for s in RECORDED)
    for scenario_id in RECORDED:
        loaded = cassettes.load(directory / f"{scenario_id}.yaml")
        assert loaded.api == api and loaded.exchanges, scenario_id
    asked = len(standin.prompts)

    replayed = await run_qa(*RECORDED, bot_file=bot_file(api), provider="replay", cassettes_dir=directory)
    assert len(standin.prompts) == asked
    assert_generic_pass(replayed, api, RECORDED)
    requests = model_requests(replayed)
    assert {e["api"] for e in requests} == {api} and all(e["rule"] and ".yaml #" in e["rule"] for e in requests)


@API
async def test_the_committed_cassettes_replay(run_qa, api: str) -> None:
    """fixtures/cassettes/<api>/: recorded from the stand-in with this bot (see fixtures/cassettes/README.md)."""
    result = await run_qa(*GENERIC, bot_file=bot_file(api), provider="replay", replay_speed="fast",
                          cassettes_dir=REPO / "fixtures" / "cassettes" / api)
    assert_generic_pass(result, api)
    assert {e["api"] for e in model_requests(result)} == {api}


@API
async def test_model_requests_and_lock_evidence_come_from_the_journal(run_qa, api: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clean = await run_qa("canary", "matrix-thread-follow-up", bot_file=bot_file(api, "lock-trace"))
    assert clean.code == 0, clean.report
    lock = clean.summary["lock"]
    assert lock["verdict"] == "pass", lock
    assert lock["modelRequests"] >= 3 and any("taken from the provider journal" in r for r in lock["reasons"])

    # The mutation: the journal loses this API's entries. Both checks must notice, not pass on nothing.
    every = ModelServer.journal.fget
    assert every is not None
    monkeypatch.setattr(ModelServer, "journal", property(lambda self: [e for e in every(self) if e.api != api]))
    blind = await run_qa("canary", "matrix-thread-follow-up", bot_file=bot_file(api, "lock-trace"),
                         step_timeout_cap_s=MUTANT_STEP_CAP_S)  # the journal never shows the request
    assert blind.code == 1
    failure = blind.scenario("matrix-thread-follow-up")["failure"]
    assert (failure["stepKind"], failure["step"]) == ("expect_model_request", 6), failure
    assert "in the provider journal" in failure["expected"], failure
    lock = blind.summary["lock"]
    assert lock["verdict"] != "pass" and lock["modelRequests"] == 0, lock
