"""Where the built-in scenario library and mock-provider rules live, in a checkout and in an installed package.

In a checkout (and an editable install) they are the repo's own `scenarios/` and `fixtures/`, beside the `qa`
package. A plain `pip install .` copies both into `<prefix>/share/matrix-qa/` (pyproject's data-files), because
the repo keeps them at the top level rather than inside the package, and that prefix is what `sysconfig` calls
the installation's data directory. A `pip install --user` puts them under the user scheme's data directory
(~/.local/share/matrix-qa on Linux), which is not the interpreter's; pipx and `uv tool` install into a venv of
their own, whose prefix is sys.prefix.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path

DATA_SUBDIR = Path("share") / "matrix-qa"
ESTIMATES_FILE = "durations.json"
_CHECKOUT = Path(__file__).resolve().parents[1]


def _candidates() -> list[Path]:
    roots = [_CHECKOUT]
    for base in (sysconfig.get_path("data"), sys.prefix, _user_data(), sys.base_prefix):
        if base:
            roots.append(Path(base) / DATA_SUBDIR)
    return roots


def _user_data() -> str | None:
    """The user scheme's data directory (`pip install --user`), where the platform has one."""
    scheme = f"{os.name}_user"
    return sysconfig.get_path("data", scheme) if scheme in sysconfig.get_scheme_names() else None


def library_root(candidates: list[Path] | None = None) -> Path | None:
    """The first root that holds a scenario library: scenarios/ beside fixtures/mock-provider/."""
    for root in candidates if candidates is not None else _candidates():
        if (root / "scenarios").is_dir() and (root / "fixtures" / "mock-provider").is_dir():
            return root
    return None


def builtin_scenarios_dir() -> Path | None:
    root = library_root()
    return root / "scenarios" if root else None


def builtin_estimates() -> dict[str, float]:
    """Expected ms per built-in scenario id (scenarios/durations.json, written by bench/scenario_estimates.py
    from a measured run). Only the start order under --jobs reads it (qa.harness.plan.longest_first), so a
    missing or unreadable file means plan order, never an error."""
    root = library_root()
    try:
        data = json.loads((root / "scenarios" / ESTIMATES_FILE).read_text()) if root else {}
        return {str(k): float(v) for k, v in data["durationsMs"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def builtin_rules_dir() -> Path | None:
    root = library_root()
    return root / "fixtures" / "mock-provider" if root else None


def rules_root_for(scenario_path: Path | None) -> Path:
    """What a scenario's `provider: {rules: [...]}` paths are relative to: the folder above the scenario's own
    folder (the repo root for the scenarios/ + fixtures/ layout), so a run works from any directory."""
    if scenario_path is None:
        return library_root() or Path.cwd()
    return Path(scenario_path).resolve().parent.parent


def media_fixture(scenario_path: Path | None, name: str) -> Path:
    """Where a scenario's `send_media: {fixture: NAME}` file is: fixtures/media/ beside its rule files."""
    return rules_root_for(scenario_path) / "fixtures" / "media" / name


def confined(root: Path, relative: str) -> tuple[Path | None, str | None]:
    """(resolved path, None) when `root`/`relative`, every symlink followed, is a regular file inside `root`
    (itself resolved); else (None, why). A symlink out of the scenario library (to /proc/self/environ, say) would
    otherwise be read and sent, so a scenario may name only what its own library holds."""
    try:
        base = root.resolve(strict=True)
        path = (root / relative).resolve(strict=True)
    except FileNotFoundError:
        return None, "not found"
    except RuntimeError:  # a symlink loop (Python 3.11 raises this for one)
        return None, "a symlink loop"
    except OSError as exc:
        return None, f"cannot resolve: {exc.strerror or exc}"
    if not path.is_relative_to(base):
        return None, f"resolves to {path}, outside {base}: refused"
    if not path.is_file():
        return None, f"resolves to {path}, which is not a regular file"
    return path, None
