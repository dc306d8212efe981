"""Field types every part of a scenario shares: durations, names, marked text and the strict base model.

Pure (no file access). Step modules and the scenario settings import these, so they sit below both: a step
kind can declare its fields without importing the scenario it appears in.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from qa.shared import markers

BOT = "bot"


def error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is shown as is (the loader adds file, line and field)."""
    # The message goes through the context so braces in user input (markers!) are not taken as placeholders.
    return PydanticCustomError(kind, "{message}", {"message": message})


# --- durations ---------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
DURATION_HELP = "use e.g. 60s, 1500ms, 2m, or a number of seconds"


MAX_DURATION_S = 7 * 24 * 3600.0


def parse_duration(value: object) -> float:
    """Seconds from "60s", "1500ms", "2m", "1h", "1.5s", 60 or 1.5 (a bare number is seconds)."""
    # YAML turns `yes`/`no`/`off` into bools, and bool is an int subclass: never let those pass as 1 or 0.
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError(f"duration must be at most {MAX_DURATION_S:g}s (a week)") from None
    elif isinstance(value, str):
        m = _DURATION_RE.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}; {DURATION_HELP}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive and finite, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration must be at most {MAX_DURATION_S:g}s (a week: a longer wait bounds nothing), "
                         f"got {str(value)[:40]!r}")
    return seconds


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise error("duration", str(exc)) from None


# In a JSON Schema (matrix-qa schema) a duration is what a file may write, not the float it becomes.
DURATION_JSON_SCHEMA = {
    "anyOf": [{"type": "number", "exclusiveMinimum": 0},
              {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$"}],
    "description": f"a duration: {DURATION_HELP}",
}
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(DURATION_JSON_SCHEMA)]


# --- names and text ----------------------------------------------------------------------------------------


def _name(what: str, pattern: str, rule: str) -> AfterValidator:
    rx = re.compile(pattern)

    def check(value: str) -> str:
        if not rx.fullmatch(value):
            raise error("name", f"invalid {what} {value!r}: {rule}")
        return value

    return AfterValidator(check)


ScenarioId = Annotated[
    str, _name("scenario id", r"[a-z0-9][a-z0-9-]*", "lowercase letters, digits and '-', not starting with '-'")
]
ProfileName = Annotated[str, _name("profile", r"[a-z0-9-]+", "lowercase letters, digits and '-'")]
ActorName = Annotated[
    str, _name("actor name", r"[a-z][a-z0-9_]*", "lowercase letters, digits and '_', starting with a letter")
]
RoomName = Annotated[
    str, _name("room name", r"[a-z][a-z0-9_-]*", "lowercase letters, digits, '_' and '-', starting with a letter")
]
StepId = Annotated[str, _name("step id", r"[a-z0-9][a-z0-9_-]*", "lowercase letters, digits, '_' and '-'")]
TraceType = Annotated[str, _name("trace record type", r"[a-z][a-z0-9_.]*", "e.g. inbound, lock.acquire")]
Reason = Annotated[str, _name("reason", r"[a-z0-9][a-z0-9_.-]*", "e.g. mention-required")]
DeviceName = Annotated[
    str, _name("device name", r"[a-z][a-z0-9_]*", "lowercase letters, digits and '_', starting with a letter")
]
# An actor's device: `driver` (the one it started with) or `driver.phone` (one `login_device` added).
DeviceRef = Annotated[
    str, _name("device", r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?", "an actor (driver) or actor.device (driver.phone)")
]


def _check_markers(value: str) -> str:
    try:
        markers.check(value)
    except markers.MarkerError as exc:
        raise error("marker", str(exc)) from None
    return value


# Text that may carry markers; checked here so a typo like {tokn} fails at load time, not mid-run.
MarkedText = Annotated[str, Field(min_length=1), AfterValidator(_check_markers)]


class Model(BaseModel):
    """Every scenario model: unknown fields are errors, since a misspelt optional field would otherwise be
    silently ignored and the scenario would test something other than what its author meant."""

    # populate_by_name lets Python code (runner, tests) write `actor=` where YAML writes `as:`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
