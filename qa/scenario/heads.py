"""A scenario file's id and profiles read from its top-level lines, without parsing the file, when the text is plain
enough that a full parse is sure to read the same; pure, so the run can choose its files before reading them whole.

Why: a run of the fast profile parsed all 104 library files (0.46 s of pure-Python YAML) to run 16. The run chooses
its files on these heads and parses only the chosen ones in full (qa.scenario.loader.load_selected), checking
that each parse agrees with its head.

"Plain enough": every line that starts at column 0 is a comment or `key: …` with a plain key; `id` is one plain
scalar on its line that YAML reads as a string; `profiles` (if present) is a one-line flow list of such scalars;
neither key is written twice. Anything else (quotes, anchors, merge keys, several documents, a block list,
a tab) is None: the caller parses that file in full, as it always did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from yaml.nodes import ScalarNode

_TOP_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?:[ ]+(.*?))?[ ]*")
_COMMENT = re.compile(r"(.*?)(?:[ ]+#.*)?")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_PROFILE = re.compile(r"[a-z0-9-]+")
_FLOW_LIST = re.compile(r"\[(.*)\]")
_STR = "tag:yaml.org,2002:str"
_OTHER_BREAKS = ("\r", "\x85", "\u2028", "\u2029")


@dataclass(frozen=True)
class Head:
    id: str
    profiles: tuple[str, ...]


def _plain_string(value: str, pattern: re.Pattern[str]) -> str | None:
    """The value when it is a plain scalar of the pattern that YAML reads as a string (not `true`, `123`, `null`)."""
    if not pattern.fullmatch(value):
        return None
    return value if yaml.SafeLoader.resolve(yaml.SafeLoader, ScalarNode, value, (True, False)) == _STR else None


def _value(rest: str | None) -> str | None:
    """The value on a key's own line, its trailing comment cut; None when the value is not on that line."""
    if rest is None:
        return None
    match = _COMMENT.fullmatch(rest)
    return match.group(1) if match else None


def _profiles(value: str | None) -> tuple[str, ...] | None:
    list_match = _FLOW_LIST.fullmatch(value) if value else None
    if list_match is None:
        return None
    inner = list_match.group(1).strip()
    if not inner:
        return ()
    names = [_plain_string(part.strip(), _PROFILE) for part in inner.split(",")]
    return None if None in names else tuple(name for name in names if name is not None)


def head(text: str) -> Head | None:
    """The file's id and profiles (a missing `profiles` is no profiles), or None when it must be parsed to know."""
    text = text.replace("\r\n", "\n")
    if any(brk in text for brk in _OTHER_BREAKS):  # YAML breaks lines there too; the lines here would not be its
        return None
    found: dict[str, str | None] = {}
    for line in text.split("\n"):
        if not line or line[0] in " #":
            continue
        match = _TOP_KEY.fullmatch(line)
        if match is None:
            return None
        key = match.group(1)
        if key in ("id", "profiles"):
            if key in found:
                return None
            found[key] = _value(match.group(2))
    raw_id = found.get("id")
    scenario_id = _plain_string(raw_id, _NAME) if raw_id else None
    profiles = _profiles(found["profiles"]) if "profiles" in found else ()
    if scenario_id is None or profiles is None:
        return None
    return Head(scenario_id, profiles)
