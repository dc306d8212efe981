"""A model request that a replayed cassette could not answer: what the replay provider finds and the report shows.

Pure data, on the ground floor so the provider that finds a miss and the report that explains it both stand above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class Recorded(Protocol):
    """What a miss needs of the nearest recorded exchange (qa.provider.cassette.Exchange): its number."""

    @property
    def index(self) -> int: ...


@dataclass
class Miss:
    """A request no exchange matched: the nearest recorded one and the diff, recorded → this run."""

    request: dict[str, Any]
    nearest: Recorded | None
    diff: list[str]
