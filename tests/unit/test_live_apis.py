"""`--provider live --api responses|anthropic` (qa.provider.live): the key's variable and the default base URL per
API, and Anthropic's preflight (`GET /v1/models` signed with x-api-key), against the mock provider."""

from __future__ import annotations

import socket

import pytest

from qa.kernel.errors import ConfigError, InfraError
from qa.provider.live import (
    ANTHROPIC_BASE_URL,
    DEFAULT_BASE_URL,
    LiveProvider,
    LiveSettings,
    default_base_url,
    key_env_vars,
    resolve_live_settings,
)
from qa.provider.mock import MockProvider

KEY = "sk-ant-0123456789abcdef"


def settings(api: str, env: dict[str, str], base_url: str | None = None) -> LiveSettings:
    return resolve_live_settings(model="claude-x", base_url=base_url, timeout_s=5, max_retries=0, env=env, api=api)


def test_each_api_reads_its_own_key_and_has_its_own_default_endpoint() -> None:
    anthropic = settings("anthropic", {"ANTHROPIC_API_KEY": KEY, "OPENAI_API_KEY": "sk-openai-0123456789"})
    assert (anthropic.api, anthropic.api_key, anthropic.key_source, anthropic.base_url) == (
        "anthropic", KEY, "ANTHROPIC_API_KEY", ANTHROPIC_BASE_URL)
    assert anthropic.base_url_host == "api.anthropic.com" and KEY not in repr(anthropic)
    fallback = settings("anthropic", {"MATRIX_QA_LIVE_ANTHROPIC_KEY": KEY})
    assert fallback.key_source == "MATRIX_QA_LIVE_ANTHROPIC_KEY"
    responses = settings("responses", {"OPENAI_API_KEY": KEY})
    assert (responses.api, responses.key_source, responses.base_url) == ("responses", "OPENAI_API_KEY",
                                                                         DEFAULT_BASE_URL)
    assert resolve_live_settings(model="m", base_url=None, timeout_s=None, max_retries=None,
                                 env={"OPENAI_API_KEY": KEY}).api == "chat"
    assert key_env_vars("chat") == ("OPENAI_API_KEY", "MATRIX_QA_LIVE_OPENAI_KEY")
    assert default_base_url("responses") == "https://api.openai.com/v1"
    assert default_base_url("anthropic") == "https://api.anthropic.com/v1"


def test_a_missing_key_names_the_apis_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        settings("anthropic", {"OPENAI_API_KEY": KEY})
    assert "set ANTHROPIC_API_KEY (or MATRIX_QA_LIVE_ANTHROPIC_KEY)" in str(caught.value)
    with pytest.raises(ConfigError, match="--api must be one of chat, responses, anthropic, got 'gemini'"):
        settings("gemini", {"OPENAI_API_KEY": KEY})
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        settings("anthropic", {"ANTHROPIC_API_KEY": KEY}, base_url=f"https://user:{KEY}@api.anthropic.com/v1")


async def test_the_anthropic_preflight_signs_with_x_api_key() -> None:
    async with MockProvider(api_key=KEY) as mock:
        live = LiveProvider(settings("anthropic", {"ANTHROPIC_API_KEY": KEY}, base_url=mock.base_url))
        await live.start()
        assert live.checked is not None and live.checked.startswith("models listed in ")
        assert mock.journal[-1].path == "/v1/models" and mock.journal[-1].status == 200
        wrong = LiveProvider(settings("anthropic", {"ANTHROPIC_API_KEY": "sk-ant-wrong-0123456"},
                                      base_url=mock.base_url))
        with pytest.raises(InfraError) as caught:
            await wrong.start()
        message = str(caught.value)
        assert "answered HTTP 401; check the key in ANTHROPIC_API_KEY" in message and "invalid x-api-key" in message
        assert "sk-ant-wrong" not in message
        elsewhere = LiveProvider(settings("anthropic", {"ANTHROPIC_API_KEY": KEY},
                                          base_url=mock.base_url.replace("/v1", "/nothing/v1")))
        await elsewhere.start()
        assert elsewhere.checked is not None and elsewhere.checked.startswith(
            "no model list (HTTP 404); messages will be tried anyway in ")


async def test_an_unreachable_anthropic_endpoint_stops_the_run() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live = LiveProvider(settings("anthropic", {"ANTHROPIC_API_KEY": KEY}, base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(InfraError, match="could not be reached"):
        await live.start()
