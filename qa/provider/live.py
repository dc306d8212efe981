"""The live provider: any endpoint the user pays for, speaking one of the model APIs (`--api`): OpenAI Chat
Completions (`chat`, the default: any OpenAI-compatible server), OpenAI Responses (`responses`) or Anthropic
Messages (`anthropic`).

Unlike the mock, nothing is served here. The harness only has to

* resolve settings (model, base URL, timeout, retries) and the key, and refuse bad ones before anything starts
  (`resolve_live_settings`, pure: the environment is a parameter);
* hand the key to the bot through its environment only (the launch contract's OPENAI_API_KEY and
  ANTHROPIC_API_KEY, set by qa.harness.launch), never through its config file, a command line or the summary,
  and register it for redaction;
* check once, before the first scenario, that the endpoint answers and accepts the key (`LiveProvider.start`),
  so a wrong key is one clear exit-2 error instead of every scenario timing out.

The bot's own client gets the same timeout and retry bound through the launch (`provider.timeout_s` and
`provider.max_retries` in a bot file's template; the embedded agent's `model.timeoutS`,
`model.maxRetries`); the SDK retries 408/409/429/5xx and connection errors with exponential backoff, at most
`max_retries` times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from qa.kernel.errors import ConfigError, InfraError
from qa.shared.redact import MIN_SECRET_LENGTH, redact
from qa.urls import clean_http_url

APIS = ("chat", "responses", "anthropic")
# Checked in this order; the first one that is set (and not blank) wins.
KEY_ENV_VARS = ("OPENAI_API_KEY", "MATRIX_QA_LIVE_OPENAI_KEY")
ANTHROPIC_KEY_ENV_VARS = ("ANTHROPIC_API_KEY", "MATRIX_QA_LIVE_ANTHROPIC_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Kept with the `/v1` as the OpenAI URLs are; the launch contract's ANTHROPIC_BASE_URL is this without it.
ANTHROPIC_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
# More retries than this turns a rate-limited run into one that sits for many minutes per message.
MAX_RETRIES_LIMIT = 10


@dataclass(frozen=True)
class LiveSettings:
    model: str
    base_url: str
    timeout_s: float
    max_retries: int
    key_source: str
    # Out of repr and comparisons: a settings object in a traceback or a log line must not carry the key.
    api_key: str = field(repr=False, compare=False)
    api: str = "chat"

    @property
    def base_url_host(self) -> str:
        """What the report records about the endpoint: host and port only (no path, no query, no userinfo)."""
        parsed = urlparse(self.base_url)
        host = parsed.hostname or ""
        return f"{host}:{parsed.port}" if parsed.port else host

    @property
    def secrets(self) -> list[str]:
        return [self.api_key]


def key_env_vars(api: str = "chat") -> tuple[str, str]:
    return ANTHROPIC_KEY_ENV_VARS if api == "anthropic" else KEY_ENV_VARS


def default_base_url(api: str = "chat") -> str:
    return ANTHROPIC_BASE_URL if api == "anthropic" else DEFAULT_BASE_URL


def resolve_api_key(env: Mapping[str, str], api: str = "chat") -> tuple[str, str]:
    """(key, name of the variable it came from); ConfigError naming the variables when none is set."""
    names = key_env_vars(api)
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return value, name
    raise ConfigError(
        f"--provider live needs an API key: set {names[0]} (or {names[1]}) in the environment. "
        "It is read from the environment only, so it never appears in a command line or an artifact."
    )


def validate_base_url(base_url: str, api: str = "chat") -> str:
    """The base URL without a trailing slash; ConfigError for anything the SDK could not use safely."""
    return clean_http_url(base_url, "--base-url", default_base_url(api),
                          f"put the key in {key_env_vars(api)[0]} instead")


def resolve_live_settings(
    *,
    model: str | None,
    base_url: str | None,
    timeout_s: float | None,
    max_retries: int | None,
    env: Mapping[str, str],
    api: str = "chat",
) -> LiveSettings:
    """Validate everything `--provider live` needs. Pure: reads only its arguments. `api` is the endpoint's model
    API: it chooses the key's variable and the default base URL (Anthropic's for `anthropic`)."""
    if api not in APIS:
        raise ConfigError(f"--api must be one of {', '.join(APIS)}, got {api!r}")
    if not model or not model.strip():
        raise ConfigError("--provider live needs --model (the model id your endpoint serves, e.g. gpt-5.4)")
    timeout = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"--model-timeout must be a positive number of seconds, got {timeout_s!r}")
    retries = DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries)
    if not 0 <= retries <= MAX_RETRIES_LIMIT:
        raise ConfigError(f"--model-retries must be between 0 and {MAX_RETRIES_LIMIT}, got {max_retries!r}")
    url = validate_base_url(base_url or default_base_url(api), api)
    key, source = resolve_api_key(env, api)
    if len(key) < MIN_SECRET_LENGTH:
        # Redaction ignores strings this short (they would match ordinary text), so such a key could leak.
        raise ConfigError(f"the key in {source} is shorter than {MIN_SECRET_LENGTH} characters; "
                          "it cannot be a real key and could not be redacted from artifacts")
    return LiveSettings(model=model.strip(), base_url=url, timeout_s=timeout, max_retries=retries,
                        key_source=source, api_key=key, api=api)


class LiveProvider:
    """The run's handle on a live endpoint. Keeps no request journal: the endpoint is not ours to watch."""

    mode = "live"

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self.base_url = settings.base_url
        # How the endpoint answered the preflight, for the run's progress line.
        self.checked: str | None = None

    async def start(self) -> None:
        """One authenticated request, so a wrong key or URL stops the run before any scenario starts.

        `GET /models` is the cheapest authenticated call of the API (Anthropic's too, signed with `x-api-key`).
        Servers that do not implement it (a 404 or 405) are accepted: they may still serve the model API, and the
        scenarios will tell.
        """
        if self.settings.api == "anthropic":
            await self._check_anthropic()
            return
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.settings.api_key,
                                    timeout=self.settings.timeout_s, max_retries=self.settings.max_retries)
        started = time.monotonic()
        try:
            await client.models.list()
            self.checked = "models listed"
        except (openai.NotFoundError, openai.UnprocessableEntityError) as exc:
            self.checked = f"no model list (HTTP {exc.status_code}); chat will be tried anyway"
        except openai.APIStatusError as exc:
            if exc.status_code == 405:
                self.checked = "no model list (HTTP 405); chat will be tried anyway"
            else:
                raise InfraError(self._describe(exc, f"answered HTTP {exc.status_code}")) from None
        except openai.APIConnectionError as exc:
            raise InfraError(self._describe(exc, "could not be reached")) from None
        finally:
            await client.close()
        self.checked += f" in {(time.monotonic() - started) * 1000:.0f} ms"

    async def _check_anthropic(self) -> None:
        """The preflight without Anthropic's SDK (not a dependency of matrix-qa): one signed `GET /models`."""
        import aiohttp

        headers = {"x-api-key": self.settings.api_key, "anthropic-version": ANTHROPIC_VERSION}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        started = time.monotonic()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, \
                    http.get(f"{self.base_url}/models", headers=headers) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InfraError(self._describe(exc, "could not be reached")) from None
        if status in (404, 405):
            self.checked = f"no model list (HTTP {status}); messages will be tried anyway"
        elif status != 200:
            raise InfraError(self._describe(_HttpStatus(status, text), f"answered HTTP {status}")) from None
        else:
            self.checked = "models listed"
        self.checked += f" in {(time.monotonic() - started) * 1000:.0f} ms"

    async def stop(self) -> None:
        """Nothing to stop: the bot processes hold the only connections, and they are stopped with the run."""

    def _describe(self, exc: Exception, what: str) -> str:
        hint = ""
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            hint = f"; check the key in {self.settings.key_source}"
        detail = redact(str(exc), self.settings.secrets)[:300]
        return f"live provider at {self.settings.base_url_host} {what}{hint}: {detail}"


class _HttpStatus(Exception):
    """An HTTP error answer, shaped for `_describe` as the SDKs' status errors are."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status_code = status
