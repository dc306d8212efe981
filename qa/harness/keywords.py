"""`-k PATTERN`: pick scenarios by a pattern over their ids and titles, with `and`, `or`, `not` and parentheses as
pytest's `-k` has them. Pure, so it is tested (and mutation-tested) without servers.

A word matches a scenario when it is a substring of its id or title (case-insensitive), or, when the word holds a
glob character (`*`, `?`, `[`), when the glob matches the whole id or the whole title. Repeating `-k` picks what
any of the patterns picks, as repeating `--scenario` does.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

Matcher = Callable[[str, str], bool]  # (id, title) -> picked?

_GLOB_CHARS = frozenset("*?[")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_BINARY = frozenset({"and", "or"})  # `not` is read before these are refused as a word


class PatternError(ValueError):
    """A -k pattern that cannot be read; the message says where."""


def word_matcher(word: str) -> Matcher:
    """One word: a glob over the whole id or title when it has glob characters, else a substring of either."""
    needle = word.lower()
    if _GLOB_CHARS & set(needle):
        return lambda sid, title: fnmatch.fnmatchcase(sid.lower(), needle) or fnmatch.fnmatchcase(title.lower(), needle)
    return lambda sid, title: needle in sid.lower() or needle in title.lower()


class _Parser:
    """Recursive descent, loosest first: or > and > not > (group) | word."""

    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN.findall(text)
        self.pos = 0

    def parse(self) -> Matcher:
        if not self.tokens:
            raise PatternError("empty pattern")
        matcher = self._or()
        if self.pos < len(self.tokens):
            raise PatternError(f"unexpected {self.tokens[self.pos]!r} after a complete pattern")
        return matcher

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise PatternError("pattern ends where a word or '(' was expected")
        self.pos += 1
        return token

    def _or(self) -> Matcher:
        parts = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda sid, title: any(p(sid, title) for p in parts)

    def _and(self) -> Matcher:
        parts = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            parts.append(self._not())
        if len(parts) == 1:
            return parts[0]
        return lambda sid, title: all(p(sid, title) for p in parts)

    def _not(self) -> Matcher:
        token = self._take()
        if token == "not":
            inner = self._not()
            return lambda sid, title: not inner(sid, title)
        if token == "(":
            inner = self._or()
            if self._take() != ")":
                raise PatternError("'(' without its ')'")
            return inner
        if token == ")" or token in _BINARY:
            raise PatternError(f"unexpected {token!r} where a word or '(' was expected")
        return word_matcher(token)


def compile_pattern(text: str) -> Matcher:
    """One -k pattern, read; PatternError says what is wrong with it."""
    return _Parser(text).parse()


def compile_patterns(patterns: Sequence[str]) -> Matcher:
    """Every -k given: a scenario is picked when any pattern picks it; none given picks everything."""
    matchers = []
    for pattern in patterns:
        try:
            matchers.append(compile_pattern(pattern))
        except PatternError as exc:
            raise PatternError(f"{pattern!r}: {exc}") from None
    if not matchers:
        return lambda sid, title: True
    return lambda sid, title: any(m(sid, title) for m in matchers)
