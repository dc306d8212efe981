"""Run-specific values in model traffic ↔ their placeholders, so a cassette recorded in one run matches another.

What changes from run to run in what a bot sends its model:

* the scenario's markers (`{token}` … `{token9}`, qa.shared.markers), fresh per run and per scenario;
* the run's suffix in every user's localpart (`mqa-bot-canary-1a2b3c`, run_localpart_suffix), which a
  mention puts in the body;
* Matrix event and room ids (a reaction notice names the message it reacted to), random per run.

A cassette stores them in the scenario template syntax (qa.shared.markers): `{token}`, `{run}`, and
`{event1}`, `{room1}` … numbered by first appearance within one request. Literal braces are doubled, so the
mapping is exact in both directions: `expand(template(text)) == text` for every text.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from qa.shared import markers
from qa.shared.markers import Marker

RUN_NAME = "run"
# Synapse's event ids (room v4+) are `$` and 43 url-safe base64 characters; room ids are `!opaque:server`.
# Neither pattern reaches into the other's text, and neither matches a marker (`MQA-` + 8 hex digits).
_MATRIX_ID_RE = re.compile(r"\$[A-Za-z0-9_\-+/]{20,}|![A-Za-z0-9]{8,}:[A-Za-z0-9.\-]+(?::\d+)?")
_NUMBERED_RE = re.compile(r"(event|room)[1-9][0-9]*")


class PlaceholderError(ValueError):
    """A template names a placeholder this run has no value for."""


def scope_values(tokens: Mapping[str, str], run_id: str) -> dict[str, str]:
    """The values one scenario of one run puts into model traffic, by placeholder name."""
    return {**dict(tokens), RUN_NAME: run_localpart_suffix(run_id)}


def run_localpart_suffix(run_id: str) -> str:
    # The runner ends every user's localpart with it (qa.scenario.runner), so a mention templates as {run}.
    return run_id[-6:].lower()


def is_known_name(name: str, fixed: Mapping[str, str] | frozenset[str]) -> bool:
    return name in fixed or bool(_NUMBERED_RE.fullmatch(name))


class Placeholders:
    """Templating for one request and its response. Ids are numbered by first appearance, so a request that
    matches its recording numbers them alike, and a response that echoes `{event1}` gets this run's id back."""

    def __init__(self, values: Mapping[str, str]) -> None:
        # Longest first: a value that contains another value (never the case for markers, but cheap) wins.
        self._values = sorted(((v, k) for k, v in values.items() if v), key=lambda p: -len(p[0]))
        self._fixed = dict(values)
        self._found: dict[str, str] = {}  # matrix id -> name
        self._counts = {"event": 0, "room": 0}

    @property
    def names(self) -> dict[str, str]:
        """Every placeholder this object can expand, with its value."""
        return {**self._fixed, **{name: value for value, name in self._found.items()}}

    def template(self, text: str) -> str:
        escaped = text.replace("{", "{{").replace("}", "}}")
        escaped = _MATRIX_ID_RE.sub(lambda m: "{" + self._name_for(m.group(0)) + "}", escaped)
        for value, name in self._values:
            escaped = escaped.replace(value, "{" + name + "}")
        return escaped

    def _name_for(self, matrix_id: str) -> str:
        if matrix_id not in self._found:
            kind = "event" if matrix_id.startswith("$") else "room"
            self._counts[kind] += 1
            self._found[matrix_id] = f"{kind}{self._counts[kind]}"
        return self._found[matrix_id]

    def spans(self, text: str, keep: Iterable[str] = ()) -> list[tuple[int, int]]:
        """Where run values, matrix ids and the `keep` strings sit in a (raw) text, as (start, end) offsets."""
        found = [(m.start(), m.end()) for m in _MATRIX_ID_RE.finditer(text)]
        for value in [v for v, _name in self._values] + [k for k in keep if k]:
            start = text.find(value)
            while start >= 0:
                found.append((start, start + len(value)))
                start = text.find(value, start + 1)
        return sorted(found)

    def unsplit(self, pieces: list[str], keep: Iterable[str] = ()) -> list[str]:
        """Streamed pieces of one text, with every run value whole in one piece: a marker the model streamed
        as "MQA-" + "e620" + "27a1" would otherwise be stored as itself, outside any placeholder. A boundary
        inside a value moves to the value's start, so the value arrives with its last piece (when the client
        had all of it); the count of pieces stays, and with it each piece's time. `keep`: more strings to keep
        whole (secrets, so that redaction finds them)."""
        if not pieces:
            return []
        text = "".join(pieces)
        spans = self.spans(text, keep)
        cuts, position = [], 0
        for piece in pieces:
            position += len(piece)
            cut = position
            for start, end in reversed(spans):
                if start < cut < end:
                    cut = start
            cuts.append(max(cut, cuts[-1] if cuts else 0))
        return [text[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]

    def expand(self, template: str) -> str:
        try:
            return markers.expand(template, self.names)
        except markers.MarkerError as exc:
            raise PlaceholderError(str(exc)) from None

    def template_data(self, value: Any) -> Any:
        """Every string of a JSON-like tree templated (keys too: tool schemas are data, not run values)."""
        return _walk(value, self.template)

    def expand_data(self, value: Any) -> Any:
        return _walk(value, self.expand)


def template_names(template: str) -> list[str]:
    """The placeholder names a template uses; MarkerError when it is malformed."""
    return [p.name for p in markers.parse(template) if isinstance(p, Marker)]


def _walk(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {(fn(k) if isinstance(k, str) else k): _walk(v, fn) for k, v in value.items()}
    return value
