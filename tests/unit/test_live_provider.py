"""`--provider live`: settings and key resolution (pure), the preflight over real HTTP, and the secret scan."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from qa.kernel.errors import ConfigError, InfraError
from qa.provider.live import (
    DEFAULT_BASE_URL,
    LiveProvider,
    LiveSettings,
    resolve_live_settings,
)
from qa.provider.mock import MockProvider
from qa.run.record import artifact_hint
from qa.shared.redact import redact, scan_for_secrets
from tests.nothing_early import NOTHING_EARLY

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-0123456789abcdef"


def _settings(env: dict[str, str] | None = None, **kwargs: object) -> LiveSettings:
    args: dict[str, object] = {"model": "gpt-5.4", "base_url": None, "timeout_s": None, "max_retries": None}
    args.update(kwargs)
    return resolve_live_settings(env={"OPENAI_API_KEY": KEY} if env is None else env, **args)  # type: ignore[arg-type]


# --- settings -----------------------------------------------------------------------------------------------


def test_defaults_and_what_the_bot_gets() -> None:
    s = _settings()
    assert (s.model, s.base_url, s.timeout_s, s.max_retries) == ("gpt-5.4", DEFAULT_BASE_URL, 60.0, 2)
    assert s.key_source == "OPENAI_API_KEY" and s.api_key == KEY
    assert s.base_url_host == "api.openai.com"
    assert KEY not in repr(s) and KEY not in str(s)


def test_missing_key_names_both_variables() -> None:
    for env in ({}, {"OPENAI_API_KEY": "  "}, {"MATRIX_QA_LIVE_OPENAI_KEY": ""}):
        with pytest.raises(ConfigError) as caught:
            _settings(env)
        assert "OPENAI_API_KEY" in str(caught.value) and "MATRIX_QA_LIVE_OPENAI_KEY" in str(caught.value)
        assert caught.value.exit_code == 2


def test_key_precedence_and_fallback_variable() -> None:
    assert _settings({"MATRIX_QA_LIVE_OPENAI_KEY": "sk-fallback-1"}).key_source == "MATRIX_QA_LIVE_OPENAI_KEY"
    both = _settings({"OPENAI_API_KEY": "sk-primary-1", "MATRIX_QA_LIVE_OPENAI_KEY": "sk-fallback-1"})
    assert both.api_key == "sk-primary-1"
    # The bot always gets it as OPENAI_API_KEY (the launch contract), whichever variable it came from.
    assert _settings({"MATRIX_QA_LIVE_OPENAI_KEY": "sk-fallback-1"}).api_key == "sk-fallback-1"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model": None}, "--model"),
        ({"model": "  "}, "--model"),
        ({"base_url": "ftp://x"}, "--base-url"),
        ({"base_url": "localhost:8080"}, "--base-url"),
        ({"base_url": "https://user:sk-secret@example.org/v1"}, "credentials"),
        ({"timeout_s": 0}, "--model-timeout"),
        ({"timeout_s": float("nan")}, "--model-timeout"),
        ({"max_retries": -1}, "--model-retries"),
        ({"max_retries": 11}, "--model-retries"),
    ],
)
def test_invalid_settings_are_usage_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as caught:
        _settings(**kwargs)
    assert "sk-secret" not in str(caught.value)


def test_key_too_short_to_redact_is_refused() -> None:
    with pytest.raises(ConfigError, match="redacted"):
        _settings({"OPENAI_API_KEY": "abc"})


def test_base_url_host_records_host_and_port_only() -> None:
    s = _settings(base_url="http://models.internal:8443/openai/deployments/x/?api-version=1/")
    assert s.base_url_host == "models.internal:8443"
    assert s.base_url == "http://models.internal:8443/openai/deployments/x/?api-version=1"


def test_cli_missing_key_exits_2_naming_the_variable(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "run", "--provider", "live", "--model", "gpt-5.4", "--scenario", "canary",
         "--output-dir", str(tmp_path / "out"), *NOTHING_EARLY],  # refused before either is needed
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_rejects_live_flags_on_a_mock_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qa.cli", "run", "--model", "gpt-5.4", "--scenario", "canary", *NOTHING_EARLY],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2 and "--model" in proc.stderr


# --- the preflight over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def mock_with_key() -> AsyncIterator[MockProvider]:
    async with MockProvider(api_key=KEY) as provider:
        yield provider


async def test_preflight_accepts_the_right_key(mock_with_key: MockProvider) -> None:
    live = LiveProvider(_settings(base_url=mock_with_key.base_url, model="mock-model"))
    await live.start()
    assert live.checked and live.checked.startswith("models listed")
    auth = [e for e in mock_with_key.journal if e.path.endswith("/models")]
    assert auth and auth[-1].status == 200


async def test_preflight_wrong_key_is_infra_error_without_the_key(mock_with_key: MockProvider) -> None:
    wrong = "sk-wrong-key-987654321"
    live = LiveProvider(_settings({"MATRIX_QA_LIVE_OPENAI_KEY": wrong}, base_url=mock_with_key.base_url))
    with pytest.raises(InfraError) as caught:
        await live.start()
    message = str(caught.value)
    assert "401" in message and "MATRIX_QA_LIVE_OPENAI_KEY" in message and "127.0.0.1" in message
    assert wrong not in message
    assert caught.value.exit_code == 2


async def test_preflight_tolerates_servers_without_a_model_list(mock_with_key: MockProvider) -> None:
    live = LiveProvider(_settings(base_url=mock_with_key.base_url + "/no-models-here"))
    await live.start()
    assert live.checked and "HTTP 404" in live.checked


async def test_preflight_unreachable_endpoint() -> None:
    live = LiveProvider(_settings(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5))
    with pytest.raises(InfraError, match="could not be reached"):
        await live.start()


async def _flaky_server(statuses: list[int]) -> tuple[web.AppRunner, list[int], str]:
    """Answers /v1/models with the given statuses in turn (then 200), asking for an immediate retry."""
    seen: list[int] = []

    async def models(request: web.Request) -> web.Response:
        status = statuses[len(seen)] if len(seen) < len(statuses) else 200
        seen.append(status)
        body = {"object": "list", "data": []} if status == 200 else {"error": {"message": "busy", "type": "x"}}
        return web.json_response(body, status=status, headers={"retry-after-ms": "1"})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, seen, f"http://127.0.0.1:{port}/v1"


async def test_retries_429_and_5xx_within_the_bound() -> None:
    runner, seen, url = await _flaky_server([429, 503])
    try:
        await LiveProvider(_settings(base_url=url, max_retries=2)).start()
        assert seen == [429, 503, 200]
    finally:
        await runner.cleanup()


async def test_retries_stop_at_the_bound() -> None:
    runner, seen, url = await _flaky_server([500] * 10)
    try:
        with pytest.raises(InfraError, match="HTTP 500"):
            await LiveProvider(_settings(base_url=url, max_retries=2)).start()
        assert len(seen) == 3, "one try plus two retries"
    finally:
        await runner.cleanup()


# --- keeping the key out of artifacts -----------------------------------------------------------------------


def test_secret_scan_catches_a_planted_key_and_redaction_removes_it(tmp_path: Path) -> None:
    """The scan the integration test relies on: it must find a key when one is there (redaction off)."""
    (tmp_path / "scenarios" / "canary").mkdir(parents=True)
    log = tmp_path / "scenarios" / "canary" / "bot.log"
    log.write_text(f"openai: Authorization: Bearer {KEY}\n")
    escaped_key = 'sk-"quoted\\key-123'
    (tmp_path / "journal.json").write_text(json.dumps({"headers": {"authorization": escaped_key}}))
    (tmp_path / "clean.txt").write_text("nothing to see")

    found = scan_for_secrets(tmp_path, [KEY, escaped_key])
    assert found == [(tmp_path / "journal.json", 1), (log, 0)]

    log.write_text(redact(log.read_text(), [KEY]))
    assert scan_for_secrets(tmp_path, [KEY]) == []


def test_artifact_hint_points_at_the_workflow_run() -> None:
    env = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42",
           "MATRIX_QA_ARTIFACT_NAME": "matrix-qa-artifacts"}
    hint = artifact_hint(env)
    assert "`matrix-qa-artifacts` artifact" in hint and "https://github.com/o/r/actions/runs/42" in hint
    assert artifact_hint({}) == "`matrix-qa-report.md` in the run's artifacts"


# --- the CI workflow ----------------------------------------------------------------------------------------


def test_ci_workflow_runs_fast_mock_and_always_uploads_what_it_points_at() -> None:
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix-qa.yml").read_text())
    job = workflow["jobs"]["fast-mock"]
    steps = job["steps"]
    run = next(s for s in steps if "matrix-qa run" in s.get("run", ""))
    args = run["run"].split()
    assert args[args.index("--profile") + 1] == "fast" and args[args.index("--provider") + 1] == "mock"
    output_dir = args[args.index("--output-dir") + 1]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()", "the artifacts matter most when the run failed"
    assert upload["with"]["path"] == output_dir
    # The job summary's pointer names the artifact; it must be the one uploaded.
    assert job["env"]["MATRIX_QA_ARTIFACT_NAME"] == upload["with"]["name"]
    assert any("pip install" in s.get("run", "") for s in steps)
    # The live job never runs unattended, and gets its key from a secret through the environment only.
    live = workflow["jobs"]["fast-live"]
    assert "workflow_dispatch" in live["if"]
    live_run = next(s for s in live["steps"] if "matrix-qa run" in s.get("run", ""))
    assert live_run["env"]["OPENAI_API_KEY"] == "${{ secrets.OPENAI_API_KEY }}"
    assert "${{" not in live_run["run"], "inputs go through env, never into the script text"
