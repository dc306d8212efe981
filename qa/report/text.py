"""How every report writes a duration, an id, a path and a long line: one rule each, used everywhere.

Pure. The markdown, the HTML, the lock pictures and `matrix-qa compare` all format through here, so one run's
report never writes the same duration as `1514.3ms`, `1.51 s` and `1514 ms`, or a room id in full in one table
and cut in another. Full values stay in the summary JSON (and in a `title` where the format has one).
"""

from __future__ import annotations

import math
import re

EMPTY = "—"
# Characters of an id's local part kept after its sigil: enough to tell one run's rooms and events apart.
ID_CHARS = 8
# A GitHub code block scrolls sideways past about this many characters in a pull request's column.
WRAP_WIDTH = 100
CONTINUATION = "    "

# Room and event ids (user ids stay whole: `@driver` and `@bot` must stay apart); the server part is dropped.
_ID = re.compile(rf"(?<![\w.])([!$][A-Za-z0-9_\-+=]{{{ID_CHARS + 2},}})(?::[A-Za-z0-9.\-]+(?::\d+)?)?")
# An absolute path: a run's own files are shown from scenarios/ on; a path elsewhere (the bot's state dir in a
# temp dir) by its last parts only.
_ABS_PATH = re.compile(r"(?<![\w.~:/])/(?:[\w.\-]+/){2,}[\w\-]+\.[\w.\-]+")
PATH_PARTS = 3
# `key=value` fields of a trace record as the harness describes it (qa.harness's describe_record).
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w.]*)=")


def human_ms(ms: float | None) -> str:
    """A duration as a person reads it: 0.3 ms, 12.7 ms, 850 ms, 1.51 s, 2 min 05 s, 1 h 02 min."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return EMPTY
    if ms < 100:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def signed_ms(ms: float) -> str:
    """A change of a duration: +1.44 s, −12.0 ms."""
    return ("+" if ms >= 0 else "−") + human_ms(abs(ms))


def short_id(value: str) -> str:
    """`!qpviIePd5y44-qSk9…:server` → `!qpviIePd…`: within one run every id is on one homeserver, so the server
    part only takes room; a short id is kept whole."""
    local = value.split(":", 1)[0]
    return local if len(local) <= ID_CHARS + 2 else local[: ID_CHARS + 1] + "…"


def short_session(session: object) -> str:
    """`!room:server/thread/$root:server` → `!roomAbCd…/thread/$rootAbCd…`; anything else is kept."""
    text = "" if session is None else str(session)
    return "/".join(short_id(part) if part[:1] in ("!", "$") else part for part in text.split("/"))


def shorten_ids(text: str) -> str:
    """Every Matrix room, event and user id in free text, shortened like short_id."""
    return _ID.sub(lambda m: short_id(m.group(1)), text)


def short_path(path: str) -> str:
    """A path as a reader of the run's artifacts needs it: from `scenarios/` on when it is one of the run's own
    files, else `…/` and its last few parts (a lock file in the bot's state dir, under a temp dir)."""
    parts = path.split("/")
    if "scenarios" in parts[:-1]:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("scenarios"):])
    if len([p for p in parts if p]) <= PATH_PARTS + 1:
        return path
    return "…/" + "/".join(parts[-PATH_PARTS:])


def shorten_paths(text: str) -> str:
    return _ABS_PATH.sub(lambda m: short_path(m.group(0)), text)


def fields(line: str) -> tuple[str, list[tuple[str, str]]]:
    """`head k1=v1 k2=v two` → (`head`, [(k1, v1), (k2, `v two`)]): a value runs up to the next ` key=`."""
    starts = [(m.start(1), m.end()) for m in _FIELD.finditer(line)]
    if not starts:
        return line, []
    head = line[: starts[0][0]].rstrip()
    found = []
    for i, (key_at, value_at) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(line)
        found.append((line[key_at: value_at - 1], line[value_at:end].rstrip()))
    return head, found


def deciding_first(line: str, expected: str) -> str:
    """A described record with the fields the expectation names moved to the front: `lock.acquire waitMs=1456.7
    · session=… purpose=inbound …`, so the value that decided the step is what a reader sees first."""
    head, pairs = fields(line)
    named = set(re.findall(r"[A-Za-z][\w.]*", expected))
    first = [f"{k}={v}" for k, v in pairs if k in named]
    if not first:
        return line
    rest = [f"{k}={v}" for k, v in pairs if k not in named]
    return " ".join([head, *first, "·", *rest]).strip(" ·") if rest else " ".join([head, *first]).strip()


def wrap(line: str, width: int = WRAP_WIDTH) -> list[str]:
    """One long line as several no wider than `width`, broken at spaces where there are any, continued with an
    indent; a line that fits is returned as it is."""
    width = max(width, len(CONTINUATION) + 1)  # a continuation must have room for more than its indent
    out: list[str] = []
    rest = line
    while len(rest) > width:
        floor = len(CONTINUATION) if out else 0  # a break inside the indent would make no progress
        # Before a `key=` field where there is one (a field stays whole), else at the last space, else hard.
        at_field = [m.start() for m in _FIELD.finditer(rest, floor + 1) if m.start() <= width]
        cut = at_field[-1] if at_field else rest.rfind(" ", floor + 1, width + 1)
        if cut < 0:
            cut = width
        out.append(rest[:cut].rstrip())
        rest = CONTINUATION + rest[cut:].lstrip()
    out.append(rest)
    return out


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


_MS = re.compile(r"(?<![\w.\-])(\d+(?:\.\d+)?) ?ms\b")


def humanize_durations(text: str) -> str:
    """`held for 1506.7ms` → `held for 1.51 s`: durations inside sentences the evidence wrote, written by the
    same rule as every other duration of the report."""
    def one(m: re.Match[str]) -> str:
        value = float(m.group(1))
        # A whole number under a second was written as a limit (`timeout 25ms`): `25.0 ms` would read as measured.
        return f"{m.group(1)} ms" if "." not in m.group(1) and value < 1000 else human_ms(value)

    return _MS.sub(one, text)


def clip(text: str, limit: int) -> str:
    """One line of at most `limit` characters, cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
