"""Checking URLs people pass on the command line: one place, so every flag rejects the same mistakes."""

from __future__ import annotations

from urllib.parse import urlparse

from qa.errors import ConfigError


def clean_http_url(value: str, flag: str, example: str, credentials_hint: str) -> str:
    """The URL without a trailing slash, or ConfigError naming the flag.

    Credentials in a URL would be copied into the bot's config file and the report, so they are refused with a
    hint on where the secret belongs instead."""
    cleaned = value.strip().rstrip("/")
    parsed = urlparse(cleaned)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"{flag} must be an http(s) URL such as {example}, got {value!r}")
    if parsed.username or parsed.password:
        raise ConfigError(f"{flag} must not contain credentials; {credentials_hint}")
    return cleaned
