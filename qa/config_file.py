"""The config file: `[tool.matrix-qa]` in a pyproject.toml, or a matrix-qa.toml, found from a folder upward. Public and
small, so every front end (the CLI, the pytest plugin) finds and reads the same file the same way.

In each folder from the start upward, matrix-qa.toml wins over pyproject.toml, and a pyproject.toml without a
`[tool.matrix-qa]` table is passed over (as ruff and pytest do), so a repository's own pyproject does not end the
search. The keys are the `run` flags without their dashes (`bot`, `scenarios-dir`, `jobs`); what they mean is the
CLI's business (qa.cli_run.apply_config), not this module's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.kernel.errors import ConfigError

OWN_FILE = "matrix-qa.toml"
PYPROJECT = "pyproject.toml"
TABLE = "matrix-qa"  # [tool.matrix-qa]


@dataclass(frozen=True)
class ConfigFile:
    """A config file as read: where it is and its settings, keys as written."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        """What relative paths in the file are relative to: the file's own folder, wherever the run starts."""
        return self.path.parent

    def where(self, key: str) -> str:
        """`pyproject.toml: [tool.matrix-qa] jobs`: how an error names a key."""
        table = f"[tool.{TABLE}] " if self.path.name == PYPROJECT else ""
        return f"{self.path}: {table}{key}"


def find_config_file(start: Path | None = None) -> Path | None:
    """The config file that applies in `start` (default: the current directory), or None."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        own = candidate / OWN_FILE
        if own.is_file():
            return own
        pyproject = candidate / PYPROJECT
        if pyproject.is_file() and _mentions_table(pyproject):
            return pyproject
    return None


def load_config_file(path: Path) -> ConfigFile:
    """The file's matrix-qa settings; a file that cannot be read or is not TOML is a ConfigError naming it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if path.name == PYPROJECT:
        data = data.get("tool", {}).get(TABLE, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    return ConfigFile(path=path, values=dict(data))


def _mentions_table(pyproject: Path) -> bool:
    """A cheap look before parsing: a project's pyproject is none of our business unless it has our table."""
    try:
        text = pyproject.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f"tool.{TABLE}" in text or f'tool."{TABLE}"' in text
