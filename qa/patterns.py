"""A user's regular expression (mock-provider rules, fault rules, a bot file's readiness `log`): one type, one
error path, bounded in what it may cost.

Why: a pattern comes from a file anyone may write. Python's `re` cannot be interrupted, so catastrophic
backtracking (`(a+)+$`) would hang the event loop with no way out but SIGKILL; every match here goes through the
`regex` package with a timeout instead. Its compiler expands counted repeats, so nested ones (`((a{1000}){1000})`)
would eat gigabytes before any match: their product is bounded first, from the pattern's `re` parse tree, which
also reports a repeat count past the engine's limit as an invalid pattern rather than an OverflowError.
"""

from __future__ import annotations

import re
from re import _constants as sre_c  # type: ignore[attr-defined]  # the stdlib's own parse tree, read only
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Annotated, Any

import regex
from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from qa.kernel.errors import ConfigError

MAX_PATTERN_CHARS = 2000
MAX_EXPANSION = 20_000  # characters a compiled pattern may stand for, counted repeats multiplied out
MATCH_TIMEOUT_S = 0.25  # one search; a sane pattern on a model message takes microseconds

_REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", sre_c.MAX_REPEAT)}


class PatternTimeout(ConfigError):
    """A user's pattern took longer than MATCH_TIMEOUT_S on one text: a configuration error (exit 2)."""


class UserPattern:
    """A compiled user pattern; `search` is bounded in time. `pattern` is the text as written."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled = regex.compile(pattern)

    def search(self, text: str) -> Any:
        try:
            return self._compiled.search(text, timeout=MATCH_TIMEOUT_S)
        except TimeoutError:
            raise PatternTimeout(
                f"regular expression /{self.pattern}/ took over {MATCH_TIMEOUT_S:g}s on a {len(text)}-character "
                "text (catastrophic backtracking, e.g. a nested repeat like (a+)+): simplify it") from None

    @property
    def groupindex(self) -> dict[str, int]:
        return dict(self._compiled.groupindex)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserPattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"UserPattern({self.pattern!r})"


def expansion(tree: Any) -> int:
    """Pure: how many characters a parsed pattern stands for once counted repeats are multiplied out (an
    unbounded or optional repeat counts its minimum, at least once)."""
    total = 0
    for op, av in tree:
        if op in _REPEATS:
            low, _, sub = av
            total += max(int(low), 1) * expansion(sub)
        elif op is sre_c.SUBPATTERN:
            total += expansion(av[-1])
        elif op is sre_c.BRANCH:
            total += sum(expansion(branch) for branch in av[1])
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            total += expansion(av[1])
        elif op is getattr(sre_c, "ATOMIC_GROUP", None):
            total += expansion(av)
        elif op is sre_c.GROUPREF_EXISTS:
            total += sum(expansion(branch) for branch in av[1:] if branch is not None)
        else:
            total += 1
    return total


def user_pattern(value: str) -> UserPattern:
    """Compile a user's pattern; ValueError with one clear message for anything wrong with it."""
    if len(value) > MAX_PATTERN_CHARS:
        raise ValueError(f"regular expression of {len(value)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        size = expansion(sre_parse.parse(value))
    except re.error as err:
        # Its own message keeps the position, which is what the author needs.
        raise ValueError(f"invalid regex {value!r}: {err}") from None
    except (OverflowError, RecursionError) as err:  # a{99999999999}; thousands of nested groups
        raise ValueError(f"invalid regex {value!r}: {err} (a repeat count past the engine's limit, or nesting "
                         "too deep)") from None
    if size > MAX_EXPANSION:
        raise ValueError(f"invalid regex {value!r}: its counted repeats multiply out to {size} characters; at most "
                         f"{MAX_EXPANSION} (the matcher would expand them all in memory)")
    try:
        return UserPattern(value)
    except (regex.error, OverflowError, RecursionError, MemoryError) as err:
        raise ValueError(f"invalid regex {value!r}: {err}") from None


def compile_regex(value: object) -> UserPattern:
    if isinstance(value, UserPattern):
        return value
    if isinstance(value, re.Pattern):
        return user_pattern(value.pattern)
    if not isinstance(value, str):
        raise ValueError(f"a regular expression must be a string, not {type(value).__name__}")
    return user_pattern(value)


# Editors (the JSON Schema of `matrix-qa schema`) see a string holding a regular expression, as the files hold it.
Regex = Annotated[UserPattern, PlainValidator(compile_regex), PlainSerializer(lambda p: p.pattern, return_type=str),
                  WithJsonSchema({"type": "string", "format": "regex"})]
