"""Is the artifact directory usable? Checked before anything starts, so a typo costs no homeserver boot."""

from __future__ import annotations

import os
from pathlib import Path

from qa.errors import ConfigError


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
