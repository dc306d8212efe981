"""Keep secrets (API keys, registration secrets, access tokens) out of everything a run leaves behind.

Artifacts are uploaded from CI and pasted into issues, so anything that reaches disk goes through here first.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REDACTED = "[REDACTED]"

# Shorter strings would match all over ordinary text and shred the report while protecting nothing real, so
# the run refuses a user-supplied secret (API key, registration token or secret) shorter than this.
MIN_SECRET_LENGTH = 8
REDACT_CHUNK = 1 << 20  # a file is redacted this much at a time
BINARY_SNIFF = 8192  # a NUL in this many first bytes makes a file binary, as git judges it


def _usable(secrets: Iterable[str]) -> list[str]:
    # Longest first, so a secret that contains another is replaced whole rather than leaving its tail behind.
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


class _Compiled:
    """One secret list made ready once: its usable secrets in replacement order. A fast run redacts some 8,000
    strings with the same ~80 secrets, most of them in one walk over the summary; sorting the secrets again for
    every string was most of the report's writing time."""

    __slots__ = ("shortest", "usable")

    def __init__(self, usable: list[str]) -> None:
        self.usable = usable  # already in replacement order (_usable)
        self.shortest = len(self.usable[-1]) if self.usable else 0

    def redact(self, text: str) -> str:
        # A text shorter than every secret holds none (most of a summary's strings are short keys).
        if len(text) < self.shortest:
            return text
        for secret in self.usable:
            text = text.replace(secret, REDACTED)
        return text


@functools.lru_cache(maxsize=64)
def _compile(secrets: tuple[str, ...]) -> _Compiled:
    return _Compiled(_usable(secrets))


def _compiled(secrets: Iterable[str]) -> _Compiled:
    # Keyed on the secrets as given (a run's list grows as users are made): the same list, the same order, the
    # same result as sorting it afresh.
    return _compile(tuple(secrets))


def redact(text: str, secrets: Iterable[str]) -> str:
    return _compiled(secrets).redact(text)


def redact_lines(lines: list[str], secrets: Iterable[str]) -> list[str]:
    """`[redact(line, secrets) for line in lines]`, done over the lines joined where that is the same thing: no line
    and no secret holds a newline, so no secret can match across two lines. A bot's output is redacted a chunk
    of lines at a time: one search per secret over the chunk, not one per line."""
    compiled = _compiled(_usable(secrets))
    joined = "\n".join(lines)
    if any("\n" in secret for secret in compiled.usable) or joined.count("\n") != len(lines) - 1:
        return [compiled.redact(line) for line in lines]
    return compiled.redact(joined).split("\n")


def redact_data(value: Any, secrets: Iterable[str]) -> Any:
    """Redact every string (keys included) in a JSON-like tree.

    Redacting the data rather than its rendered text matters: renderers escape (`&` → `&amp;`, `"` → `\\"`),
    and an escaped secret no longer matches a plain search-and-replace.
    """
    usable = _usable(secrets)
    if not usable:
        return value
    # Only the secrets that can change a string, in the order the whole list would replace them.
    compiled = _Compiled(_able_to_occur(_compiled(usable).usable, value))

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return compiled.redact(v)
        if isinstance(v, dict):
            return {walk(k): walk(item) for k, item in v.items()}
        if isinstance(v, list | tuple):
            return [walk(item) for item in v]
        return v

    return walk(value)


def _able_to_occur(usable: list[str], value: Any) -> list[str]:
    """The secrets of `usable` (in its order) that can change a string of `value`: those found in its strings, and
    those that could appear only once another is replaced (straddling an inserted REDACTED, they hold its first or
    last character, or lie inside it). A summary of a whole run holds ~8,000 strings and ~450 secrets, few of them
    present: replacing every secret in every string was most of the time its report took to write. The strings are
    searched joined: a match across two of them only keeps a secret that then replaces nothing."""
    strings: list[str] = []
    _strings_of(value, strings)
    joined = "\0".join(strings)
    return [s for s in usable
            if s in joined or REDACTED[0] in s or REDACTED[-1] in s or s in REDACTED]


def _strings_of(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings_of(key, into)
            _strings_of(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _strings_of(item, into)


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


def _is_binary(head: bytes) -> bool:
    # A NUL in the file's first BINARY_SNIFF bytes (`head`). Not "invalid UTF-8": a bot log cut inside a character
    # when the bot was killed, or holding one Latin-1 byte, is text whose secrets must still be redacted.
    return b"\0" in head


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """Every secret replaced, also in its JSON-escaped form (how a secret with quotes sits in a .json file)."""
    return _replace(data, _all_needles(secrets))


def _all_needles(secrets: Iterable[str]) -> list[bytes]:
    return list(_needles_of(tuple(secrets)))


@functools.lru_cache(maxsize=64)
def _needles_of(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    # The end-of-run sweep asks for the same ~450 secrets' needles once per file (~450 files): made once.
    return tuple(needle for secret in _usable(secrets) for needle in _needles(secret))


class _Finder:
    """Whether any of many needles is in a piece of bytes, without one search per needle through all of it.

    Every occurrence of a needle is inside a run of bytes that each occur in some needle (the needles' alphabet) at
    least as long as the shortest needle. So the needles are looked for only in the piece's distinct such runs,
    joined by a byte outside the alphabet (no needle can span it): the same answer, and a log repeats its words and
    ids, so the runs are a tenth of it. A run's 450 needles searched through every file was most of a run's end."""

    def __init__(self, needles: tuple[bytes, ...]) -> None:
        self.needles = needles
        alphabet = {b for needle in needles for b in needle}
        outside = next((b for b in range(256) if b not in alphabet), None)
        members = b"".join(re.escape(bytes([b])) for b in sorted(alphabet))
        shortest = min(len(needle) for needle in needles)
        # (the runs' pattern, their joiner); None when the needles hold every byte value: no joiner is possible
        self.runs = None if outside is None else (re.compile(b"[" + members + b"]{%d,}" % shortest), bytes([outside]))

    def found_in(self, piece: bytes) -> bool:
        if self.runs is None:
            return any(needle in piece for needle in self.needles)
        pattern, joiner = self.runs
        runs = joiner.join(set(pattern.findall(piece)))
        return any(needle in runs for needle in self.needles)


@functools.lru_cache(maxsize=64)
def _finder(needles: tuple[bytes, ...]) -> _Finder:
    return _Finder(needles)


def _replace(data: bytes, needles: list[bytes]) -> bytes:
    for needle in needles:
        data = data.replace(needle, REDACTED.encode())
    return data


def safe_cut(buffer: bytes, cut: int, needles: list[bytes]) -> int:
    """The largest position at or before `cut` that no occurrence of a needle straddles: a chunk may end there
    and every secret in it is still whole."""
    cut = max(cut, 0)
    moved = True
    while moved:
        moved = False
        for needle in needles:
            pos = buffer.find(needle, max(cut - len(needle) + 1, 0))
            if -1 < pos < cut:
                cut, moved = pos, True
    return cut


def _chunks(path: Path, needles: list[bytes]) -> Iterator[bytes]:
    """The file in pieces of about REDACT_CHUNK bytes, each cut where no secret straddles the cut."""
    keep = max(len(n) for n in needles) - 1
    carry = b""
    with path.open("rb") as handle:
        while chunk := handle.read(REDACT_CHUNK):
            buffer = carry + chunk
            cut = safe_cut(buffer, len(buffer) - keep, needles)
            carry = buffer[cut:]
            yield buffer[:cut]
    yield carry


def redact_file(path: Path, secrets: Iterable[str]) -> bool:
    """Rewrite a text file with every secret redacted; True if it changed. Binary files are left alone.

    For files copied into the artifacts (bot logs, traces, transcripts) that were written without redaction.
    Read and written in pieces, so a bot log of hundreds of megabytes costs no more memory than a small one;
    a file without a secret is only read. The new text goes to a temporary file beside it that then replaces the
    original, so a crash mid-write leaves the old file or the new one, never half of each; the file keeps its
    permissions.
    """
    path = Path(path)
    needles = _all_needles(secrets)
    with path.open("rb") as handle:
        if not needles or _is_binary(handle.read(BINARY_SNIFF)):
            return False
    finder = _finder(tuple(needles))
    if not any(finder.found_in(piece) for piece in _chunks(path, needles)):
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".redacting", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in _chunks(path, needles):
                handle.write(_replace(piece, needles))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True
