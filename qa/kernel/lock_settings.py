"""Session write-lock settings: defaults, the agent config's `session.writeLock`, and env overrides.

Precedence is env > config > default, and `resolve_lock_settings` also says where each effective value came
from, so a report can show that a CI variable (not the scenario's config) set the timeout it ran with. In the
kernel because the lock doctor (qa.kernel.doctor, `matrix-qa doctor` too) judges lock files by the same values.

Defaults, and why:
  acquireTimeoutMs = 10_000  A narrow hold is one append + fsync (well under 100 ms even on a slow CI disk), so
                             a waiter that needs 10 s is looking at a bug, not at load; it fails loudly rather
                             than hanging a scenario that has its own, longer timeout.
  maxHoldMs        =  5_000  The holder's promise, written into the lock file; a waiter takes a live holder
                             over once it is past both that promise and the waiter's own maxHoldMs. Below
                             acquireTimeoutMs on purpose: a waiter stuck behind a runaway holder takes the lock
                             over (traced, and fencing the old holder) before it would give up.
  staleMs          = 30_000  The waiter's backstop for lock files whose promise can't be read (torn or corrupt
                             payload) or that promise more than this. Kept well above maxHoldMs so the traced
                             max-hold takeover, not a silent age reclaim, is what normally ends a long hold.
  scope            = narrow  Hold the lock only around transcript appends. `attempt` is the legacy bug
                             (hold across the whole attempt, model I/O included), kept so the lock-evidence
                             check can be shown to catch it.

Values must be whole numbers of milliseconds greater than zero and at most a day (MAX_MS): a zero timeout
could never be met, a zero staleMs/maxHoldMs would let every waiter steal every lock. An env variable set to
the empty string counts as unset, because CI templates commonly expand an absent matrix value to "".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

Scope = Literal["narrow", "attempt"]
Source = Literal["env", "config", "default"]

SCOPES: tuple[Scope, ...] = ("narrow", "attempt")
ENV_PREFIX = "MATRIX_QA_SESSION_WRITE_LOCK_"
CONFIG_PREFIX = "session.writeLock."

# config key -> (dataclass field, env variable)
_FIELDS: dict[str, tuple[str, str]] = {
    "acquireTimeoutMs": ("acquire_timeout_ms", ENV_PREFIX + "ACQUIRE_TIMEOUT_MS"),
    "staleMs": ("stale_ms", ENV_PREFIX + "STALE_MS"),
    "maxHoldMs": ("max_hold_ms", ENV_PREFIX + "MAX_HOLD_MS"),
    "scope": ("scope", ENV_PREFIX + "SCOPE"),
}

# Upper bound for every duration: a lock wait, hold or staleness of more than a day is a typo, not a setting,
# and a bound keeps absurd values (thousands of digits) from reaching time arithmetic.
MAX_MS = 86_400_000

# ASCII digits only: str.isdigit() would accept "²" or Arabic-Indic digits.
_WHOLE = re.compile(r"[0-9]+")


class LockConfigError(ValueError):
    """A bad lock setting; the message names the env variable or config field and the offending value."""


@dataclass(frozen=True)
class LockSettings:
    acquire_timeout_ms: int = 10_000
    stale_ms: int = 30_000
    max_hold_ms: int = 5_000
    scope: Scope = "narrow"


def resolve_lock_settings(
    config: Mapping[str, Any] | None, env: Mapping[str, str]
) -> tuple[LockSettings, dict[str, Source]]:
    """Effective settings plus, per config key (`acquireTimeoutMs`, …), where the value came from."""
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise LockConfigError(f"session.writeLock must be a mapping, got {config!r}")
    unknown = sorted(set(config) - set(_FIELDS))
    if unknown:
        # A typo such as `staleMS` would otherwise silently fall back to the default.
        names = ", ".join(CONFIG_PREFIX + str(k) for k in unknown)
        raise LockConfigError(f"unknown setting {names} (known: {', '.join(_FIELDS)})")

    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for key, (field, env_name) in _FIELDS.items():
        raw_env = env.get(env_name)
        if raw_env is not None and raw_env.strip() != "":
            values[field] = _parse(key, raw_env, env_name)
            sources[key] = "env"
        elif key in config:
            values[field] = _parse(key, config[key], CONFIG_PREFIX + key)
            sources[key] = "config"
        else:
            sources[key] = "default"
    return LockSettings(**values), sources


def _parse(key: str, raw: Any, name: str) -> Any:
    if key == "scope":
        return _parse_scope(raw, name)
    return _parse_ms(raw, name)


def _shown(raw: Any) -> str:
    # A value of thousands of digits would turn the one-line error into a screenful.
    text = repr(raw)
    return text if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"


def _parse_ms(raw: Any, name: str) -> int:
    expected = f"expected a whole number of milliseconds from 1 to {MAX_MS} (one day)"
    # bool is an int subclass; `true` in YAML must not become 1 ms.
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
        digits = raw.strip().lstrip("0") or "0"
        # Checked before int(): Python refuses to convert strings of more than 4300 digits (ValueError).
        if len(digits) > len(str(MAX_MS)):
            raise LockConfigError(f"{name}={_shown(raw)}: {expected}")
        value = int(digits)
    else:
        raise LockConfigError(f"{name}={_shown(raw)}: {expected}")
    if not 0 < value <= MAX_MS:
        raise LockConfigError(f"{name}={_shown(raw)}: {expected}")
    return value


def _parse_scope(raw: Any, name: str) -> Scope:
    value = raw.strip() if isinstance(raw, str) else raw
    if value not in SCOPES:
        raise LockConfigError(f"{name}={raw!r}: expected one of {'|'.join(SCOPES)}")
    return cast(Scope, value)
