"""Will the plan refuse this choice of scenarios? Foreseen from the files' heads alone (qa.scenario.heads), before the
harness imports its scenario machinery (pydantic, the loader), so that `matrix-qa run` starts its early Synapse and
fork server only for a run that will run: a mistyped `--scenario` or `--profile` used to start both and throw their
imports away (~2.6 CPU-s, closing13 "Left out").

Only a foresight: the run's own checks (qa.run.options.plan_scenarios, qa.harness.plan.select) still decide and word
every refusal. `refusal` names one only when it is sure (every file found, every head plain); in any doubt it says
None and the early work starts as before, so a wrong guess can cost a refused run its early imports again, never a
good run its overlap (unless a head lies about its file: the run then goes ahead without the early start, slower,
with the same verdict).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # qa.scenario.heads imports yaml: loaded only when a head is read, not with `matrix-qa --version`
    from qa.scenario.heads import Head

SCENARIO_SUFFIXES = (".yaml", ".yml")


def files_in(directory: Path) -> list[Path]:
    """The scenario files of a directory, for the foresight and for qa.scenario.loader alike (one rule, so the
    foresight never reads a file the run would not, nor stops at one it would skip: a subdirectory or a FIFO named
    *.yaml). A symlink that leads nowhere (dangling, looping) is kept, so reading it says why, not dropped."""
    return sorted(c for c in directory.iterdir() if c.suffix in SCENARIO_SUFFIXES and (c.is_file() or c.is_symlink()))


def refusal(paths: Iterable[Path], ids: Iterable[str], profile: str) -> str | None:
    """Why the plan will be refused (a path that does not exist, an unknown id, an empty profile), or None when it
    may not be or it cannot be told from the heads (an unreadable path, a head that must be parsed to be known).
    A run that will go ahead is told as soon as its heads show it (every id found, one scenario in the profile):
    only a refusal reads every head."""
    paths = list(paths)
    unknown = dict.fromkeys(ids)
    wanted = bool(unknown)
    try:  # OSError here too: exists() raises on a name too long or a directory not searchable (the run words it)
        gone = missing(paths)
        if gone is not None:
            return gone
        from qa.scenario.heads import head

        for path in paths:
            # qa.scenario.loader's expansion: a directory's scenario files, a file as named.
            files = files_in(path) if path.is_dir() else [path]
            for file in files:
                if not file.is_file():  # a FIFO or device would block read_text; a dangling link: the run says why
                    return None
                found = head(file.read_text(encoding="utf-8"))
                if found is None:
                    return None
                unknown.pop(found.id, None)
                if not unknown if wanted else _in_profile(found, profile):
                    return None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if wanted:
        return f"unknown scenario id(s): {', '.join(unknown)}"
    return f"no scenario is in profile {profile!r}"


def missing(paths: Iterable[Path]) -> str | None:
    """The first path that is not there, worded as the loader words it; OSError (a name too long, a directory not
    searchable) is the caller's to treat as not sure."""
    for path in paths:
        if not path.exists() and not path.is_symlink():
            return f"{path}: no such file or directory"
    return None


def _in_profile(found: Head, profile: str) -> bool:
    """qa.harness.plan.in_profile's rule, on a head."""
    return profile == "all" or not found.profiles or profile in found.profiles
