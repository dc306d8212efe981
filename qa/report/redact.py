"""Keep secrets (API keys, registration secrets, access tokens) out of everything a run leaves behind.

Artifacts are uploaded from CI and pasted into issues, so anything that reaches disk goes through here first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REDACTED = "[REDACTED]"

# Shorter strings would match all over ordinary text and shred the report while protecting nothing real.
MIN_SECRET_LENGTH = 4


def _usable(secrets: Iterable[str]) -> list[str]:
    # Longest first, so a secret that contains another is replaced whole rather than leaving its tail behind.
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in _usable(secrets):
        text = text.replace(secret, REDACTED)
    return text


def redact_data(value: Any, secrets: Iterable[str]) -> Any:
    """Redact every string (keys included) in a JSON-like tree.

    Redacting the data rather than its rendered text matters: renderers escape (`&` → `&amp;`, `"` → `\\"`),
    and an escaped secret no longer matches a plain search-and-replace.
    """
    usable = _usable(secrets)
    if not usable:
        return value

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact(v, usable)
        if isinstance(v, dict):
            return {walk(k): walk(item) for k, item in v.items()}
        if isinstance(v, list | tuple):
            return [walk(item) for item in v]
        return v

    return walk(value)


def _needles(secret: str) -> list[bytes]:
    raw = secret.encode()
    # A secret with quotes or backslashes is stored escaped inside JSON files; look for that form too.
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1].encode()
    return [raw] if escaped == raw else [raw, escaped]


def scan_for_secrets(directory: Path, secrets: Iterable[str]) -> list[tuple[Path, int]]:
    """Every (file, index of the secret in `secrets`) where a secret appears under `directory`.

    The index rather than the secret itself is returned so a failing assertion does not print the secret.
    """
    indexed = [(i, s) for i, s in enumerate(secrets) if s and len(s) >= MIN_SECRET_LENGTH]
    found: list[tuple[Path, int]] = []
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        data = path.read_bytes()
        for index, secret in indexed:
            if any(needle in data for needle in _needles(secret)):
                found.append((path, index))
    return found
