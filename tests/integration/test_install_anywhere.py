"""Install anywhere: the wheel built from this repository, installed as a bot author would (`pip install --user`,
`pipx install`, `uv tool install`), runs `matrix-qa --version`, `list` and `validate` from an unrelated
directory and finds the scenario library where that layout put it (the user scheme's data dir, the tool's own
venv), not this checkout.

Everything goes into throwaway prefixes: PYTHONUSERBASE for `--user` (the session's one install of the wheel,
shared with test_init, tests/integration/wheel_cache.py; HOME under tmp_path), PIPX_HOME / PIPX_BIN_DIR for pipx,
UV_TOOL_DIR / UV_TOOL_BIN_DIR for uv, under tmp_path. The shared site-packages, where matrix-qa is installed
editable from the main checkout, is never written (a test checks its record before and after). The package caches
(pip's, uv's) are left where they are, so a second run downloads nothing. One wheel build (shared too), the three
installs side by side: about 30-45 s on the shared 2-core machine, once per suite run (one test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration import wheel_cache
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

STEP_TIMEOUT_S = 240  # one install or command, bounded; an install resolves against the index


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that points Python at this checkout (PYTHONPATH, a venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONUSERBASE", "VIRTUAL_ENV")}
    return {**env, **extra}


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def _install_user(wheel: Path, root: Path) -> tuple[Path, dict[str, str]]:
    env = _clean_env(HOME=str(root / "home"), PYTHONUSERBASE=str(root / "userbase"))
    _run([sys.executable, "-m", "pip", "install", "--user", "-q", "--no-warn-script-location", str(wheel)], env, root)
    return root / "userbase" / "bin" / "matrix-qa", env


def installed_user(wheel: Path, home: Path) -> tuple[Path, Path, dict[str, str]]:
    """(prefix, command, environment) of the session's one `pip install --user` of `wheel` (shared with test_init,
    wheel_cache.user_install), run with `home` as HOME."""
    prefix = wheel_cache.user_install(wheel, _install_user)
    env = _clean_env(HOME=str(home), PYTHONUSERBASE=str(prefix / "userbase"))
    return prefix, prefix / "userbase" / "bin" / "matrix-qa", env


def _user(wheel: Path, root: Path) -> tuple[Path, Path, dict[str, str]]:
    return installed_user(wheel, root / "home")


def _install_pipx(wheel: Path, root: Path) -> tuple[Path, Path, dict[str, str]]:
    env = _clean_env(PIPX_HOME=str(root / "pipx"), PIPX_BIN_DIR=str(root / "bin"), PIPX_MAN_DIR=str(root / "man"))
    _run([_tool("pipx"), "install", "--python", sys.executable, str(wheel)], env, root)
    return root, root / "bin" / "matrix-qa", env


def _install_uv(wheel: Path, root: Path) -> tuple[Path, Path, dict[str, str]]:
    env = _clean_env(UV_TOOL_DIR=str(root / "tools"), UV_TOOL_BIN_DIR=str(root / "bin"))
    _run([_tool("uv"), "tool", "install", "--python", sys.executable, str(wheel)], env, root)
    return root, root / "bin" / "matrix-qa", env


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


LAYOUTS = {"pip install --user": ("pip", _user), "pipx install": ("pipx", _install_pipx),
           "uv tool install": ("uv", _install_uv)}


def _check(layout: str, wheel: Path, root: Path, elsewhere: Path) -> str:
    """Install one layout and run the installed command from `elsewhere`; returns the library dir it found."""
    root.mkdir()
    prefix, exe, env = LAYOUTS[layout][1](wheel, root)  # prefix: where the layout installed it
    version = _run([str(exe), "--version"], env, elsewhere).stdout
    assert version.startswith("matrix-qa 0."), version
    listed = json.loads(_run([str(exe), "list", "--json"], env, elsewhere).stdout)
    files = [Path(s["file"]) for s in listed["scenarios"]]
    assert {f.name for f in files} == {p.name for p in (REPO / "scenarios").glob("*.yaml")}, layout
    library = files[0].parent
    assert library.is_relative_to(prefix) and library.parts[-3:] == ("share", "matrix-qa", "scenarios"), library
    assert "ok: scenarios are valid" in _run([str(exe), "validate"], env, elsewhere).stdout
    return str(library)


def _editable_record() -> bytes:
    info = Path(sysconfig.get_path("purelib")) / "matrix_qa-0.1.0.dist-info"
    return b"".join((info / n).read_bytes() for n in ("RECORD", "direct_url.json") if (info / n).exists())


def test_the_wheel_installs_and_finds_its_library_in_every_layout(tmp_path: Path, built_wheel: Path) -> None:
    missing = {layout: f"{tool} is not installed (pip install {tool})" for layout, (tool, _) in LAYOUTS.items()
               if tool != "pip" and not Path(_tool(tool)).exists()}
    before = _editable_record()
    wheel = built_wheel  # this checkout's, built once per session (tests/integration/wheel_cache.py)
    elsewhere = tmp_path / "unrelated"  # no checkout, no config file, no scenarios above it
    elsewhere.mkdir()
    layouts = [layout for layout in LAYOUTS if layout not in missing]
    with ThreadPoolExecutor(max_workers=len(layouts)) as pool:
        found = dict(zip(layouts, pool.map(lambda layout: _check(layout, wheel, tmp_path / LAYOUTS[layout][0],
                                                                  elsewhere), layouts), strict=True))
    assert len(set(found.values())) == len(found), found  # each layout its own library, none the checkout's
    assert _editable_record() == before, "the shared site-packages' editable install was changed"
    if missing:
        pytest.skip(f"checked: {', '.join(found)}; NOT CHECKED: " + "; ".join(f"{k}: {v}" for k, v in
                                                                             missing.items()))
