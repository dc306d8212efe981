"""Per-run markers in scenario text: `{token}`, `{token2}` … `{token9}`.

A prompt asks the model to echo a marker and the expectation looks for it, so one scenario passes against the
mock provider and a live model alike. Markers are fresh per run so that a reply left over from an earlier run
(same homeserver, same room names) can never satisfy an expectation.

Template syntax is deliberately small: `{name}` is a marker, `{{` and `}}` are literal braces, and any other
brace is an error. Being strict means a body with stray JSON fails at load time instead of being sent with a
half-expanded marker.

Pure: no I/O, so the loader can check every body at load time and the runner can expand them later.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

TOKEN_NAMES: tuple[str, ...] = ("token", *(f"token{n}" for n in range(2, 10)))
TOKEN_PREFIX = "MQA-"
# Fixed length, so no token can be a substring of a different token and "reply contains {token}" is sound.
TOKEN_RE = re.compile(r"MQA-[0-9a-f]{8}")

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
# Order matters: doubled braces must win over a marker so that `{{token}}` stays literal, as in str.format.
_PIECE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class MarkerError(ValueError):
    """A template is malformed or uses a marker nobody defined. `position` is a 0-based offset in the text."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Marker:
    name: str
    position: int


def parse(text: str) -> list[str | Marker]:
    """Split a template into literal text and markers; escapes are already resolved in the literal parts."""
    parts: list[str | Marker] = []
    literal: list[str] = []
    pos = 0
    for m in _PIECE_RE.finditer(text):
        literal.append(text[pos : m.start()])
        piece = m.group(0)
        name = m.group(1)
        if piece in ("{{", "}}"):
            literal.append(piece[0])
        elif name is not None and _NAME_RE.fullmatch(name):
            if any(literal):
                parts.append("".join(literal))
            literal = []
            parts.append(Marker(name, m.start()))
        elif name is not None:
            raise MarkerError(
                f"{piece!r} at position {m.start()} is not a marker (names look like {{token}}); "
                "write '{{' and '}}' for literal braces",
                m.start(),
            )
        else:
            raise MarkerError(
                f"unmatched {piece!r} at position {m.start()}; write {piece * 2!r} for a literal brace",
                m.start(),
            )
        pos = m.end()
    literal.append(text[pos:])
    if any(literal):
        parts.append("".join(literal))
    return parts


def check(text: str, allowed: Collection[str] = TOKEN_NAMES) -> list[str]:
    """Validate a template and return the marker names it uses, in order of first use."""
    names: list[str] = []
    for part in parse(text):
        if isinstance(part, Marker):
            if part.name not in allowed:
                known = ", ".join("{" + n + "}" for n in allowed)
                raise MarkerError(
                    f"unknown marker {{{part.name}}} at position {part.position} (known: {known}; "
                    "write '{{' and '}}' for literal braces)",
                    part.position,
                )
            if part.name not in names:
                names.append(part.name)
    return names


def expand(text: str, markers: Mapping[str, str]) -> str:
    """Substitute markers; the mapping may hold more than tokens (the runner can add its own names)."""
    out: list[str] = []
    for part in parse(text):
        if isinstance(part, Marker):
            try:
                out.append(markers[part.name])
            except KeyError:
                raise MarkerError(
                    f"marker {{{part.name}}} at position {part.position} has no value in this run",
                    part.position,
                ) from None
        else:
            out.append(part)
    return "".join(out)


class MarkerFactory(Mapping[str, str]):
    """The token values for one run (or one scenario within it: see `child`).

    Values derive from the seed, so a run can be replayed with the same tokens by passing its seed again.
    """

    def __init__(self, seed: str, names: Collection[str] = TOKEN_NAMES) -> None:
        self.seed = seed
        self._values: dict[str, str] = {}
        # Generated eagerly in a fixed order: the collision fallback below then stays deterministic.
        used: set[str] = set()
        for name in names:
            value = _derive(seed, name, used)
            used.add(value)
            self._values[name] = value

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def child(self, label: str) -> MarkerFactory:
        """Tokens for one scenario, distinct from every other scenario's in the same run."""
        return MarkerFactory(f"{self.seed}/{label}", tuple(self._values))

    def __repr__(self) -> str:
        return f"MarkerFactory(seed={self.seed!r})"


def _derive(seed: str, name: str, used: Collection[str]) -> str:
    attempt = 0
    while True:
        digest = hashlib.sha256(f"{seed}\0{name}\0{attempt}".encode()).hexdigest()
        value = TOKEN_PREFIX + digest[:8]
        # Two equal tokens would let an answer to one prompt satisfy an expectation about another.
        if value not in used:
            return value
        attempt += 1


def new_markers(run_seed: str | None = None) -> MarkerFactory:
    """Fresh tokens for a run; pass the seed of an earlier run to get its tokens back."""
    return MarkerFactory(secrets.token_hex(8) if run_seed is None else run_seed)
