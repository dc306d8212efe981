"""The live provider: any OpenAI-compatible endpoint the user pays for, reached through the `openai` SDK.

Unlike the mock, nothing is served here. The harness only has to

* resolve settings (model, base URL, timeout, retries) and the key, and refuse bad ones before anything starts
  (`resolve_live_settings`, pure: the environment is a parameter);
* hand the key to the bot through its environment only (the launch contract's OPENAI_API_KEY, set by
  qa.harness.launch), never through its config file, a command line or the summary, and register it for
  redaction;
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

from qa.errors import ConfigError, InfraError
from qa.report.redact import MIN_SECRET_LENGTH, redact
from qa.urls import clean_http_url

# Checked in this order; the first one that is set (and not blank) wins.
KEY_ENV_VARS = ("OPENAI_API_KEY", "MATRIX_QA_LIVE_OPENAI_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
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

    @property
    def base_url_host(self) -> str:
        """What the report records about the endpoint: host and port only (no path, no query, no userinfo)."""
        parsed = urlparse(self.base_url)
        host = parsed.hostname or ""
        return f"{host}:{parsed.port}" if parsed.port else host

    @property
    def secrets(self) -> list[str]:
        return [self.api_key]


def resolve_api_key(env: Mapping[str, str]) -> tuple[str, str]:
    """(key, name of the variable it came from); ConfigError naming the variables when none is set."""
    for name in KEY_ENV_VARS:
        value = (env.get(name) or "").strip()
        if value:
            return value, name
    raise ConfigError(
        f"--provider live needs an API key: set {KEY_ENV_VARS[0]} (or {KEY_ENV_VARS[1]}) in the environment. "
        "It is read from the environment only, so it never appears in a command line or an artifact."
    )


def validate_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; ConfigError for anything the SDK could not use safely."""
    return clean_http_url(base_url, "--base-url", DEFAULT_BASE_URL, "put the key in OPENAI_API_KEY instead")


def resolve_live_settings(
    *,
    model: str | None,
    base_url: str | None,
    timeout_s: float | None,
    max_retries: int | None,
    env: Mapping[str, str],
) -> LiveSettings:
    """Validate everything `--provider live` needs. Pure: reads only its arguments."""
    if not model or not model.strip():
        raise ConfigError("--provider live needs --model (the model id your endpoint serves, e.g. gpt-5.4)")
    timeout = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"--model-timeout must be a positive number of seconds, got {timeout_s!r}")
    retries = DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries)
    if not 0 <= retries <= MAX_RETRIES_LIMIT:
        raise ConfigError(f"--model-retries must be between 0 and {MAX_RETRIES_LIMIT}, got {max_retries!r}")
    url = validate_base_url(base_url or DEFAULT_BASE_URL)
    key, source = resolve_api_key(env)
    if len(key) < MIN_SECRET_LENGTH:
        # Redaction ignores strings this short (they would match ordinary text), so such a key could leak.
        raise ConfigError(f"the key in {source} is shorter than {MIN_SECRET_LENGTH} characters; "
                          "it cannot be a real key and could not be redacted from artifacts")
    return LiveSettings(model=model.strip(), base_url=url, timeout_s=timeout, max_retries=retries,
                        key_source=source, api_key=key)


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

        `GET /models` is the cheapest authenticated call of the API. Servers that do not implement it (a 404 or
        405) are accepted: they may still serve chat completions, and the scenarios will tell.
        """
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

    async def stop(self) -> None:
        """Nothing to stop: the bot processes hold the only connections, and they are stopped with the run."""

    def _describe(self, exc: Exception, what: str) -> str:
        hint = ""
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            hint = f"; check the key in {self.settings.key_source}"
        detail = redact(str(exc), self.settings.secrets)[:300]
        return f"live provider at {self.settings.base_url_host} {what}{hint}: {detail}"
