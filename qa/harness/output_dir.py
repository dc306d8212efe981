"""Is the artifact directory usable? Checked before anything starts, so a typo costs no homeserver boot."""

from __future__ import annotations

import os
from pathlib import Path

from qa.kernel.errors import ConfigError


def check_output_dir(path: Path, label: str = "--output-dir") -> None:
    """ConfigError naming `label` when `path` cannot become a writable directory.

    Only checks: the directory is created by the run itself. The nearest existing ancestor must be a directory
    this process may write to (it is where mkdir will happen); a read-only file system fails os.access too.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{label} {path} exists and is not a directory")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{label} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} is where it would be created)"
        raise ConfigError(f"{label} {path} is not writable{where}")


# What a run writes at the top of its artifact directory. A reused directory is emptied of exactly these, so
# two runs' traces and logs never mix in one lock-evidence verdict, and nothing else of the user's is touched.
RUN_ENTRIES = ("scenarios", "homeserver", "matrix-qa-summary.json", "matrix-qa-report.md", "matrix-qa-output.log",
               "matrix-qa-observed-events.json", "junit.xml", "provider-journal.json", "harness.log")
MARKERS = ("matrix-qa-summary.json", "matrix-qa-output.log")


def prepare_output_dir(path: Path, label: str = "--output-dir") -> list[str]:
    """Make `path` ready for a fresh run; returns what an earlier run left there and was removed.

    A new or empty directory is used as it is. One that holds an earlier matrix-qa run has that run's files
    removed first. Anything else non-empty is refused: it is somebody's directory, not a run's."""
    import shutil

    if not path.exists():
        path.mkdir(parents=True)
        return []
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return []
    if not any((path / m).exists() for m in MARKERS):
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        raise ConfigError(f"{label} {path} is not empty and holds no earlier matrix-qa run ({shown}); give a new "
                          "or empty directory, so no file of yours is overwritten or mixed into the evidence")
    removed = []
    for name in RUN_ENTRIES:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
            removed.append(name)
        elif target.exists() or target.is_symlink():
            target.unlink()
            removed.append(name)
    return removed
