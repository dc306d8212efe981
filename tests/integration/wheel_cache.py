"""One wheel of this checkout per test session, shared by the tests that install it (test_install_anywhere,
test_init), the unit test that reads its contents (test_packaging) and the session's xdist workers; and its one
`pip install --user`, shared by the two tests that run the command it installs.

The wheel is built once into a directory of the session's temporary root (the one the xdist workers' own roots
sit in), named by a hash of what goes into it (qa/, the scenario library, the fixtures shipped as data, the
project files): the first worker to ask builds it under an exclusive lock, the others wait on the lock and find it
built. A changed tree is a new name, so a stale wheel is never installed. Building is the same command as before
(`pip wheel --no-deps`, in an isolated build environment); only its repetition is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the wheel is built from (pyproject.toml's packages, package-data and data-files) and how.
SOURCES = ("qa", "scenarios", "fixtures/mock-provider", "fixtures/media")
PROJECT_FILES = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in")
BUILD_TIMEOUT_S = 300


def _files() -> Iterator[Path]:
    for name in PROJECT_FILES:
        if (REPO / name).is_file():
            yield REPO / name
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in _files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def session_root(basetemp: Path) -> Path:
    """The directory every xdist worker of this session shares (a worker's basetemp is `<root>/popen-gwN`)."""
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


def built_wheel(root: Path, env: dict[str, str]) -> Path:
    """The wheel of the tree as it is now, built at most once under `root`."""
    out = root / f"wheel-{source_hash()}"
    out.mkdir(parents=True, exist_ok=True)
    with open(root / f"wheel-{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes; a crashed builder's lock goes with it
        found = sorted(out.glob("matrix_qa-*.whl"))
        if found:
            return found[0]
        staging = out / "staging"
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(staging), str(REPO)],
                              env=env, cwd=root, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        assert done.returncode == 0, f"pip wheel: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        [wheel] = staging.glob("matrix_qa-*.whl")
        return wheel.rename(out / wheel.name)  # whole or absent: a reader never sees a half-written wheel


def user_install(wheel: Path, install: Callable[[Path, Path], object]) -> Path:
    """Where `wheel` (built_wheel's) is installed with `pip install --user`, done at most once per session and wheel
    beside the wheel itself: test_install_anywhere's user layout and test_init both run the command it installed
    (each with a HOME of its own), and one `pip install` of the two was 4 s of CPU. `install(wheel, where)` does
    the install into `where` (test_install_anywhere._install_user: its user base is `where / "userbase"`)."""
    root = wheel.parent.parent  # the session root built_wheel put the wheel's directory in
    where = root / f"user-{wheel.parent.name}"
    with open(root / f"{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (where / "installed").is_file():
            return where
        shutil.rmtree(where, ignore_errors=True)  # a half-done install of a failed attempt
        where.mkdir()
        install(wheel, where)
        (where / "installed").touch()  # last: a reader never takes a half-done install
        return where
