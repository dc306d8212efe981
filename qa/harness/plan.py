"""Which scenarios a run executes, in what order: pure, so it is tested without servers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from qa.errors import ConfigError

CANARY = "canary"


class _Planned(Protocol):
    id: str
    profiles: list[str]


def select(scenarios: Sequence[_Planned], profile: str, ids: Sequence[str]) -> list[_Planned]:
    """Explicit ids win over the profile; `all` means every scenario. Plan order is the loaded order,
    with the canary first: if the canary fails, nothing else can be trusted."""
    known = {s.id: s for s in scenarios}
    if ids:
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ConfigError(
                f"unknown scenario id(s): {', '.join(unknown)}; known ids: {', '.join(sorted(known))}"
            )
        wanted = set(ids)
        chosen = [s for s in scenarios if s.id in wanted]
    elif profile == "all":
        chosen = list(scenarios)
    else:
        chosen = [s for s in scenarios if profile in s.profiles]
        if not chosen:
            profiles = sorted({p for s in scenarios for p in s.profiles} | {"all"})
            raise ConfigError(f"no scenario is in profile {profile!r}; profiles: {', '.join(profiles)}")
    return sorted(chosen, key=lambda s: s.id != CANARY)
