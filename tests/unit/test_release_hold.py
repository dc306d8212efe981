"""Named mock-provider holds and the `release_hold` step: a hold is one scenario's (its provider scope), a step
releases it once a request is held (and fails, releasing anyway, when none is), and `hold_ms` ends a hold nobody
releases, in the journal's words. A real mock provider over HTTP; the step runs over a stand-in context."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from qa.provider.mock import MockProvider
from qa.provider.rules import RuleFileError, load_rules
from qa.scenario.context import StepFailed
from qa.scenario.steps.faults import ReleaseHold

RULES = """rules:
  - name: gated
    match: {latest_user: gate}
    reply: {text: went on}
    hold: gate
  - name: bounded
    match: {latest_user: brief}
    reply: {text: ran out}
    hold: brief
    hold_ms: 200
  - name: midway
    match: {latest_user: midway}
    reply: {text: "one two three four five six"}
    stream: {pieces: 6, delay_ms: 1, hold_after: 2}
    hold: midway
"""


@pytest.fixture
async def mock(tmp_path: Path) -> AsyncIterator[MockProvider]:
    rules = tmp_path / "holds.yaml"
    rules.write_text(RULES, encoding="utf-8")
    async with MockProvider(load_rules(rules)) as provider:
        yield provider


async def _ask(provider: MockProvider, scope: str, text: str) -> str:
    body = {"model": provider.model, "messages": [{"role": "user", "content": text}]}
    async with aiohttp.ClientSession() as http, \
            http.post(provider.scoped_base_url(scope) + "/chat/completions", json=body) as answer:
        return str((await answer.json())["choices"][0]["message"]["content"])


def _ctx(provider: Any, cap_s: float | None = None) -> Any:
    return SimpleNamespace(provider=provider, step_timeout_cap_s=cap_s, method=None)


async def test_a_release_lets_only_its_own_scopes_request_go(mock: MockProvider) -> None:
    a = asyncio.create_task(_ask(mock, "a", "gate"))
    b = asyncio.create_task(_ask(mock, "b", "gate"))
    await mock.wait_in_flight(lambda e: e.path.startswith("/scope/b/"), timeout=5)
    detail = await ReleaseHold(name="gate").run(_ctx(mock.scoped("a")))
    assert detail.startswith("released 'gate': req-") and " held " in detail
    assert await asyncio.wait_for(a, 5) == "went on"
    await asyncio.sleep(0.1)
    assert not b.done(), "scenario b's request went on with a's release"
    (held_b,) = mock.scoped("b").journal
    assert held_b.state == "in_flight" and held_b.hold_end is None
    (held_a,) = mock.scoped("a").journal
    assert held_a.hold_end == "released" and held_a.fault is None
    await ReleaseHold(name="gate").run(_ctx(mock.scoped("b")))
    assert await asyncio.wait_for(b, 5) == "went on"


async def test_the_step_waits_for_the_request_it_releases(mock: MockProvider) -> None:
    step = asyncio.create_task(ReleaseHold(name="gate").run(_ctx(mock.scoped("a"))))
    await asyncio.sleep(0.1)
    assert not step.done(), "released before anything was held"
    answer = asyncio.create_task(_ask(mock, "a", "gate"))
    assert (await asyncio.wait_for(step, 5)).startswith("released 'gate'")
    assert await asyncio.wait_for(answer, 5) == "went on"


async def test_nothing_held_fails_the_step_and_still_releases(mock: MockProvider) -> None:
    with pytest.raises(StepFailed) as failed:
        await ReleaseHold(name="gate", timeout=0.2).run(_ctx(mock.scoped("a")))
    assert failed.value.expected == "a model request of this scenario held under 'gate' (a rule's `hold: gate`) " \
        "to release"
    assert failed.value.seen == ["provider: no model request yet"]
    # The release stands: a request that comes late does not hang the bot.
    assert await asyncio.wait_for(_ask(mock, "a", "gate"), 5) == "went on"


async def test_hold_ms_ends_a_hold_nobody_releases_and_says_so(mock: MockProvider) -> None:
    assert await asyncio.wait_for(_ask(mock, "a", "brief"), 5) == "ran out"
    (entry,) = mock.scoped("a").journal
    assert entry.hold_end == "ran out" and entry.held_ms is not None and entry.held_ms >= 200
    assert entry.fault == "hold 'brief' ran out after 200 ms: nothing released it"
    assert entry.to_json()["holdEnd"] == "ran out"
    # A step that comes after the hold ran out finds nothing held: the window it was to close is gone.
    with pytest.raises(StepFailed) as failed:
        await ReleaseHold(name="brief", timeout=0.2).run(_ctx(mock.scoped("a")))
    assert any("hold=brief holdEnd=ran out" in line for line in failed.value.seen), failed.value.seen


async def test_a_stopping_provider_ends_its_holds_as_stopped(tmp_path: Path) -> None:
    rules = tmp_path / "holds.yaml"
    rules.write_text(RULES, encoding="utf-8")
    mock = MockProvider(load_rules(rules))
    await mock.start()
    asking = asyncio.create_task(_ask(mock, "a", "gate"))
    entry = await mock.wait_in_flight(lambda e: True, timeout=5)
    await asyncio.wait_for(mock.stop(), 5)
    await asyncio.gather(asking, return_exceptions=True)
    assert entry.hold_end == "stopped"


async def test_without_the_mock_nothing_is_held_and_the_step_says_not_checked() -> None:
    ctx = _ctx(SimpleNamespace(journal=[]))  # a live or replay provider: no holds
    assert await ReleaseHold(name="gate").run(ctx) == \
        "NOT CHECKED: only the mock provider holds requests; nothing held under 'gate'"
    assert ctx.method == "not-checked"
    assert (await ReleaseHold(name="gate").run(_ctx(None))).startswith("NOT CHECKED")


async def _stream(provider: MockProvider, scope: str, text: str, pieces: list[str]) -> None:
    body = {"model": provider.model, "stream": True, "messages": [{"role": "user", "content": text}]}
    async with aiohttp.ClientSession() as http, \
            http.post(provider.scoped_base_url(scope) + "/chat/completions", json=body) as answer:
        async for line in answer.content:
            if line.startswith(b"data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"] if b'"choices": [{' in line else {}
                if delta.get("content"):
                    pieces.append(delta["content"])


async def test_a_stream_held_after_some_pieces_says_held_only_there_and_goes_on_when_released(
        mock: MockProvider) -> None:
    pieces: list[str] = []
    asking = asyncio.create_task(_stream(mock, "a", "midway", pieces))
    entry = await mock.wait_in_flight(lambda e: True, timeout=5)
    held = await mock.scoped("a").wait_for(lambda e: e.hold == "midway", 5)
    assert held is entry and entry.hold_end is None
    await asyncio.sleep(0.1)
    # Two pieces out (the client has them), the third held back until the release.
    assert len(pieces) == 2 and not asking.done(), pieces
    assert (await ReleaseHold(name="midway").run(_ctx(mock.scoped("a")))).startswith("released 'midway'")
    await asyncio.wait_for(asking, 5)
    assert "".join(pieces) == "one two three four five six" and entry.hold_end == "released"


async def test_a_stream_held_midway_that_the_bot_gives_up_on_is_a_hang(mock: MockProvider) -> None:
    asking = asyncio.create_task(_stream(mock, "a", "midway", []))
    entry = await mock.scoped("a").wait_for(lambda e: e.hold == "midway", 5)
    asking.cancel()  # the client closes its connection while the stream is held
    await asyncio.gather(asking, return_exceptions=True)
    await mock.scoped("a").wait_for(lambda e: e.hold_end is not None, 5)
    assert entry.hold_end == "client gone" and entry.client_disconnected
    assert entry.fault == "hang: the connection closed while the request was held"


@pytest.mark.parametrize("stream", ["{pieces: 3, delay_ms: 10, hold_after: 1}", "{pieces: 3, hold_after: 1}",
                                    "{pieces: 3, delay_ms: 10, hold_after: 3}"])
def test_hold_after_needs_a_hold_and_a_paced_stream(tmp_path: Path, stream: str) -> None:
    rules = tmp_path / "bad.yaml"
    hold = "" if stream.endswith("hold_after: 1}") and "delay_ms" in stream else "    hold: h\n"
    rules.write_text(f"rules:\n  - name: r\n    reply: {{text: x}}\n    stream: {stream}\n{hold}", encoding="utf-8")
    with pytest.raises(RuleFileError, match=r"stream\.hold_after holds a paced stream"):
        load_rules(rules)


def test_a_rule_file_that_is_a_fifo_is_refused_not_read_when_a_step_releases_a_hold(tmp_path: Path) -> None:
    # The hold-name check read the scenario's rule files itself; one that is a FIFO hung `validate` (and `run`).
    import os
    import subprocess
    import sys

    (tmp_path / "fixtures").mkdir()
    os.mkfifo(tmp_path / "fixtures" / "fifo")
    (tmp_path / "scenarios").mkdir()
    scenario = tmp_path / "scenarios" / "s.yaml"
    scenario.write_text("id: s\ntitle: t\nprovider: {rules: [fixtures/fifo]}\nsteps:\n  - release_hold: {name: x}\n",
                        encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "qa.cli", "validate", str(scenario)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done
    assert "provider.rules[0]" in done.stderr + done.stdout and "not a regular file" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_hold_ms_needs_a_hold(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yaml"
    rules.write_text("rules:\n  - name: r\n    reply: {text: x}\n    hold_ms: 100\n", encoding="utf-8")
    with pytest.raises(RuleFileError, match="hold_ms bounds a hold, and this rule has no `hold`"):
        load_rules(rules)


@pytest.mark.parametrize("fields", [{}, {"name": ""}, {"name": "x", "hold": "y"}, {"name": "x", "timeout": "soon"}])
def test_bad_step_fields_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReleaseHold.model_validate(fields)
