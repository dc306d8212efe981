"""The fork server runs a served module's code found once at its preload (qa.harness.zygote.main_codes), exactly as
`python -m` would run it, and only while `python -m` in the bot's directory would find that same unchanged file."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from qa.harness import zygote

MAIN = "import sys\nRAN.append((__name__, __spec__.name, __file__ == sys.argv[0], __package__))\n"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package `mainpkg_q` run by -m (its __main__ preloaded, as the agent's is) and a plain module `plain_q`,
    imported as the preload would; sys.modules, sys.path and sys.argv restored afterwards."""
    (tmp_path / "mainpkg_q").mkdir()
    (tmp_path / "mainpkg_q" / "__init__.py").write_text("")
    (tmp_path / "mainpkg_q" / "__main__.py").write_text(MAIN)
    (tmp_path / "plain_q.py").write_text(MAIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["python"])
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    for name in ("mainpkg_q", "mainpkg_q.__main__", "plain_q"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import builtins

    monkeypatch.setattr(builtins, "RAN", [], raising=False)
    importlib.import_module("mainpkg_q.__main__")
    importlib.import_module("plain_q")
    builtins.RAN.clear()  # type: ignore[attr-defined]
    yield tmp_path
    for name in ("mainpkg_q", "mainpkg_q.__main__", "plain_q"):
        sys.modules.pop(name, None)


def _ran() -> list[tuple[str, str, bool, str]]:
    import builtins

    return builtins.RAN  # type: ignore[attr-defined,no-any-return]


def _no_runpy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    used: list[str] = []
    monkeypatch.setattr(zygote.runpy, "run_module", lambda name, **_: used.append(name))
    return used


def test_the_code_of_a_preloaded_main_module_is_read_once_and_run_as_python_m_would(
        package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = zygote.main_codes(frozenset({"mainpkg_q", "plain_q", "never_imported_q"}))
    assert set(codes) == {"mainpkg_q", "plain_q"}, "only what the preload imported"
    used = _no_runpy(monkeypatch)
    zygote._run_as_main("mainpkg_q", codes["mainpkg_q"])
    zygote._run_as_main("plain_q", codes["plain_q"])
    assert used == [], "not found and unmarshalled again"
    assert _ran() == [("__main__", "mainpkg_q.__main__", True, "mainpkg_q"), ("__main__", "plain_q", True, "")]
    assert sys.modules["__main__"].__spec__.name == "plain_q"


def test_a_changed_file_or_one_shadowed_from_the_bots_directory_is_found_again(
        package: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    codes = zygote.main_codes(frozenset({"mainpkg_q", "plain_q"}))
    used = _no_runpy(monkeypatch)
    main = package / "mainpkg_q" / "__main__.py"
    main.write_text(MAIN + "# edited after the preload\n")
    os.utime(main, ns=(1, 1))
    zygote._run_as_main("mainpkg_q", codes["mainpkg_q"])
    beside = tmp_path_factory.mktemp("bots")
    (beside / "plain_q.py").write_text(MAIN)  # the bot's directory comes first on sys.path in the fork
    monkeypatch.syspath_prepend(str(beside))
    zygote._run_as_main("plain_q", codes["plain_q"])
    assert used == ["mainpkg_q", "plain_q"] and _ran() == []
