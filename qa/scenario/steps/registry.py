"""Every step kind, found in its family module: the `Step` union that scenario files are validated with, the
kind names, and docs/scenarios.md's step table. Nothing here names a kind: adding one is a class in a family
module.

The union's tags are the YAML keys, so pydantic's error locations (steps.3.send.body) match the file's own
layout. Dispatch is the step's own `run(ctx)`; what a step needs of the bot is its own `needs()`.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Tag

from qa.scenario.steps import (
    approvals,
    devices,
    encryption,
    faults,
    lifecycle,
    media,
    membership,
    messages,
    model_requests,
    reactions,
    replies,
    silence,
    trace,
    verification,
)
from qa.scenario.steps.base import StepBase

# In the order a reader meets them: what test users do, what the bot answers, then the bot's life, its
# rooms, faults and encryption. The order of the kinds in error messages and in docs/scenarios.md's table.
FAMILIES: tuple[ModuleType, ...] = (messages, media, reactions, replies, silence, model_requests, trace, approvals,
                                    lifecycle, membership, faults, devices, verification, encryption)


def _kinds_of(module: ModuleType) -> list[type[StepBase]]:
    """The step kinds a family module declares, in declaration order."""
    return [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, StepBase)
            and obj.__module__ == module.__name__ and "kind" in vars(obj)]


STEP_TYPES: dict[str, type[StepBase]] = {cls.kind: cls for family in FAMILIES for cls in _kinds_of(family)}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, StepBase):
        return value.kind
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if isinstance(key, str) else None
    return None


def _unwrap(kind: str) -> BeforeValidator:
    # `- restart_homeserver:` with nothing after it is YAML null; treat it as an empty mapping.
    def unwrap(value: Any) -> Any:
        if isinstance(value, dict):
            inner = value.get(kind)
            return {} if inner is None else inner
        return value

    return BeforeValidator(unwrap)


_TAGGED = tuple(Annotated[cls, _unwrap(kind), Tag(kind)] for kind, cls in STEP_TYPES.items())
Step = Annotated[
    Union[_TAGGED],  # type: ignore[valid-type]  # noqa: UP007 - built from the registry, not written out
    # The message is refined by describe_step_problem, which can see the offending input.
    Discriminator(_step_tag, custom_error_type="step_type", custom_error_message="not a known step"),
]


def describe_step_problem(raw: Any) -> str:
    """Why `raw` is not a step, in words that point at the usual mistakes."""
    known = ", ".join(STEP_TYPES)
    if not isinstance(raw, dict):
        return f"a step is a single-key mapping like `send: {{...}}`, got {type(raw).__name__} (known: {known})"
    if not raw:
        return f"empty step (known step types: {known})"
    keys = [str(k) for k in raw]
    if len(keys) == 1:
        close = difflib.get_close_matches(keys[0], STEP_TYPES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown step type {keys[0]!r} ({hint}known: {known})"
    step_keys = [k for k in keys if k in STEP_TYPES]
    if len(step_keys) == 1:
        # Typically `id:` written at the step's level instead of inside it.
        others = ", ".join(k for k in keys if k != step_keys[0])
        return (
            f"a step is a single-key mapping: {others} must be indented under {step_keys[0]}: "
            f"(found keys: {', '.join(keys)})"
        )
    return f"a step is a single-key mapping naming one step type, found keys: {', '.join(keys)}"


def step_table() -> str:
    """The step table of docs/scenarios.md: one row per kind, in registry order, from each class's `does`."""
    rows = ["| step | does |", "|---|---|"]
    rows += [f"| `{kind}` | {cls.does} |" for kind, cls in STEP_TYPES.items()]
    return "\n".join(rows)
