"""A plain (non-editable) install must carry the scenario library, the mock rules and the embedded agent's
bot file, and find them from any directory."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

from qa.library import DATA_SUBDIR, ESTIMATES_FILE, library_root, rules_root_for

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_library_and_the_bot_file(built_wheel: Path) -> None:
    # This checkout's wheel (`pip wheel --no-deps`), built once per session with the tests that install it
    # (tests/integration/wheel_cache.py: named by a hash of everything it is built from, so never a stale one).
    wheel = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [n for n in names if ".data/data/share/matrix-qa/" in n]
    scenarios = {Path(n).name for n in data if "/scenarios/" in n}
    # The library, and the estimates its longest-first start order reads (qa.library.builtin_estimates).
    assert scenarios == {p.name for p in (REPO / "scenarios").glob("*.yaml")} | {ESTIMATES_FILE}
    assert any(n.endswith("fixtures/mock-provider/default.yaml") for n in data)
    assert "qa/agent/bot.yaml" in names and "qa/agent/bot-config.json.j2" in names
    assert "qa/report/templates/report.md.j2" in names


def test_library_root_prefers_a_checkout_then_the_installed_data(tmp_path: Path) -> None:
    installed = tmp_path / "prefix" / DATA_SUBDIR
    (installed / "scenarios").mkdir(parents=True)
    (installed / "fixtures" / "mock-provider").mkdir(parents=True)
    not_a_checkout = tmp_path / "site-packages"
    not_a_checkout.mkdir()
    assert library_root([not_a_checkout, installed]) == installed
    assert library_root([REPO, installed]) == REPO
    assert library_root([not_a_checkout]) is None


def test_rule_paths_are_relative_to_the_folder_above_the_scenario(tmp_path: Path) -> None:
    assert rules_root_for(tmp_path / "proj" / "scenarios" / "a.yaml") == (tmp_path / "proj").resolve()



def test_a_user_install_is_looked_for_in_the_user_scheme(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # pip install --user puts the data files under the user scheme's data dir (PYTHONUSERBASE, ~/.local by
    # default), which is neither the interpreter's prefix nor its data dir.
    import sysconfig

    from qa import library

    assert library._user_data() == sysconfig.get_path("data", f"{os.name}_user")  # ~/.local, PYTHONUSERBASE
    installed = tmp_path / "user" / DATA_SUBDIR
    (installed / "scenarios").mkdir(parents=True)
    (installed / "fixtures" / "mock-provider").mkdir(parents=True)
    monkeypatch.setattr(library, "_CHECKOUT", tmp_path / "not-a-checkout")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # a venv (pipx, uv tool) without the library
    monkeypatch.setattr(library.sysconfig, "get_path", lambda name, scheme=None: (
        str(tmp_path / "user") if scheme else str(tmp_path / "venv")))
    assert library.library_root() == installed
