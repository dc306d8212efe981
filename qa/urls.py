"""Checking URLs people pass on the command line: one place, so every flag rejects the same mistakes."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlparse

from qa.kernel.errors import ConfigError

# Query parameters that carry a credential in the APIs people point us at (OpenAI-compatible proxies take
# `api-key`/`key`, Matrix takes `access_token`); matched anywhere in the name, case-insensitively.
_CREDENTIAL_PARAM = re.compile(r"token|key|secret|passw|pwd|auth|signature|sig$|credential|session", re.IGNORECASE)


def shown_url(value: str) -> str:
    """The URL as an error message may show it: no userinfo, no query, no fragment (any may hold a secret)."""
    without_query = re.split(r"[?#]", value.strip(), maxsplit=1)[0]
    return re.sub(r"^([^/]*//)[^/]*@", r"\1***@", without_query)


def credential_params(query: str) -> list[str]:
    """Names (never values) of the query or fragment parameters that look like they carry a credential."""
    return [name for name, _ in parse_qsl(query, keep_blank_values=True) if _CREDENTIAL_PARAM.search(name)]


def clean_http_url(value: str, flag: str, example: str, credentials_hint: str) -> str:
    """The URL without a trailing slash, or ConfigError naming the flag.

    Credentials in a URL (userinfo, or a token-like query parameter) would be copied into the bot's config file,
    its log and the report, so they are refused with a hint on where the secret belongs instead. Messages show
    the URL only through `shown_url`, so the refusal itself cannot leak what it refuses."""
    cleaned = value.strip().rstrip("/")
    try:
        parsed = urlparse(cleaned)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{flag} is not a valid URL ({exc}): {shown_url(value)!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{flag} must be an http(s) URL such as {example}, got {shown_url(value)!r}")
    if parsed.username or parsed.password:
        raise ConfigError(f"{flag} must not contain credentials (user:password@); {credentials_hint}")
    params = credential_params(parsed.query) + credential_params(parsed.fragment)
    if params:
        raise ConfigError(f"{flag} must not carry credentials in its query string (parameter "
                          f"{', '.join(repr(p) for p in params)}); {credentials_hint}")
    return cleaned
