"""The pytest plugin as a bot author uses it: one pytest session runs the example test file for the independent
nio bot (it passes), the same test against its threads-at-top-level variant (it fails with the message
`matrix-qa run` gives) and against a variant holding its lock across the model request (the steps pass, the
lock evidence judged at the end fails the test), a scenario file as an item, and a step the bot lacks a
capability for (skipped with the CLI's reason), all on one homeserver; the session's report is the run's record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

BOTS = REPO / "tests" / "bots"
EXAMPLE = BOTS / "example_pytest_nio_bot.py"
VARIANT_TESTS = '''
import pytest

from tests.bots import example_pytest_nio_bot as example


@pytest.fixture
def anyio_backend():
    return "asyncio"


# Run by anyio's plugin on a loop of its own: the fixture's calls cross to the session's loop.
@pytest.mark.anyio
@pytest.mark.matrix_qa(bot="{variant}")
async def test_thread_reply_of_the_buggy_variant(matrix_qa):
    await example.test_a_mention_in_a_thread_is_answered_in_that_thread(matrix_qa)


# Every step passes; the lock evidence judged when the test ends does not.
@pytest.mark.matrix_qa(bot="{lock_variant}")
async def test_a_reply_from_a_bot_holding_its_lock_across_the_model_request(matrix_qa):
    await example.test_a_mention_is_answered_with_the_marker(matrix_qa)


async def test_a_step_the_bot_cannot_back_is_skipped(matrix_qa):
    await matrix_qa.send(as_="driver", mention="bot", body="hello", id="ask")
    await matrix_qa.expect_trace(type="inbound", to="ask")
'''


def _plugin_args() -> list[str]:
    """The entry point once matrix-qa is installed with it; before that (a fresh worktree), the module."""
    installed = any(ep.name == "matrix_qa" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "qa.pytest_plugin"]


def _normal(text: str) -> str:
    """Markers, ids and user names differ between runs; the words may not."""
    text = re.sub(r"MQA-[0-9a-f]{8}", "MQA-x", text)
    text = re.sub(r"\$[A-Za-z0-9_-]+…?", "$id", text)
    return re.sub(r"@mqa-bot-[a-z0-9-]+:localhost", "@bot", text)


async def test_a_pytest_session_tests_the_nio_bot_and_fails_its_variant_as_the_cli_does(
        run_qa, tmp_path: Path, shared_homeserver_pytest: tuple[list[str], dict[str, str]]) -> None:
    # The session's Synapse as the bot author's own server (CI's service container); the count of homeserver
    # starts below proves the session made none of its own. MATRIX_QA_TESTS_OWN_SYNAPSE=1: it boots one.
    hs_flags, hs_env = shared_homeserver_pytest
    variant = BOTS / "nio-reply-bot-thread-top-level.yaml"
    lock_variant = BOTS / "nio-reply-bot-lock-trace-lock-across-model.yaml"
    (tmp_path / "test_variant.py").write_text(VARIANT_TESTS.format(variant=variant, lock_variant=lock_variant),
                                              encoding="utf-8")
    report = tmp_path / "report"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", *_plugin_args(), "-o", "addopts=", "-p", "no:cacheprovider",
         "-p", "no:asyncio", "-rfs",
         "--matrix-qa-bot", str(BOTS / "nio-reply-bot.yaml"), "--matrix-qa-report", str(report), *hs_flags,
         str(EXAMPLE), str(tmp_path / "test_variant.py"), str(REPO / "scenarios" / "matrix-thread-follow-up.yaml")],
        cwd=REPO, env={**os.environ, **hs_env}, capture_output=True, text=True, timeout=300, check=False)
    out = inner.stdout + inner.stderr
    assert "4 passed" in out and "2 failed" in out and "1 skipped" in out, out
    assert "FAILED" in out and "test_thread_reply_of_the_buggy_variant" in out, out
    assert "test_a_reply_from_a_bot_holding_its_lock_across_the_model_request" in out, out
    assert "while the provider journal shows a model request in flight" in out, out
    assert "skipped: bot 'nio-reply-bot' lacks 'trace' (step 2 (expect_trace))" in out, out

    summary = json.loads((report / "matrix-qa-summary.json").read_text())
    assert summary["exitCode"] == 1 and summary["counts"]["passed"] == 4, summary["counts"]
    log = (report / "matrix-qa-output.log").read_text()
    assert log.count("starting synapse homeserver") == (0 if hs_flags else 1), "seven tests, one homeserver"
    failed = next(s for s in summary["scenarios"] if s["id"].endswith("buggy-variant"))
    held = next(s for s in summary["scenarios"] if "holding-its-lock" in s["id"])
    assert held["status"] == "fail" and held["details"].startswith("lock evidence: "), held
    assert summary["lock"]["verdict"] == "fail"

    # The CLI on the same bug: the same step, the same expectation, the same evidence line.
    cli = await run_qa("matrix-thread-follow-up", bot_file=variant)
    assert cli.code == 1
    by_cli = cli.scenario("matrix-thread-follow-up")
    assert _normal(failed["details"]) == _normal(by_cli["details"]), (failed["details"], by_cli["details"])
    assert _normal(failed["failure"]["seen"][0]) == _normal(by_cli["failure"]["seen"][0])
    assert "expected rel_type m.thread" in failed["failure"]["seen"][0]
    # pytest printed that text (the expectation, then what the harness saw).
    assert _normal(f"expected: {by_cli['failure']['expected']}") in _normal(out), out
    assert "expected rel_type m.thread, got m.relates_to=" in out, out
