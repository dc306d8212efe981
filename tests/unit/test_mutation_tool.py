"""bench/mutation.py's own options: the stall limit grows with the load and is set by --stall-s; --tests takes
directories as well as files. Nothing here runs mutmut."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutation_tool", REPO / "bench" / "mutation.py")
assert _spec is not None and _spec.loader is not None
mt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mt)


def test_the_stall_limit_is_the_base_up_to_one_runnable_task_per_core_and_grows_with_the_load_beyond() -> None:
    assert mt.stall_limit_s(90, 0.5, 2) == 90
    assert mt.stall_limit_s(90, 2.0, 2) == 90
    assert mt.stall_limit_s(90, 20.0, 2) == 900  # load 20 on 2 cores: ten times slower, ten times the patience
    assert mt.stall_limit_s(30, 6.0, 4) == 45
    assert mt.stall_limit_s(90, 5.0, 0) == 450  # no core count known: taken as one


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(mt, "measure", lambda *args: calls.append(args) or 0)
    # main() installs a SIGTERM handler for its scratch copy: not in the test process.
    monkeypatch.setattr(mt.signal, "signal", lambda *_: None)
    return calls


def test_tests_take_a_directory_and_stall_s_reaches_the_run(measured: list[tuple[Any, ...]]) -> None:
    assert mt.main(["qa/report/headline.py", "--tests", "tests/unit", "tests/unit/test_report_headline.py",
                    "--stall-s", "300"]) == 0
    assert measured == [("qa/report/headline.py", ["tests/unit", "tests/unit/test_report_headline.py"], False, 300)]


def test_the_default_base_is_stall_s(measured: list[tuple[Any, ...]]) -> None:
    assert mt.main(["qa/report/headline.py"]) == 0
    assert measured[0][3] == mt.STALL_S == 90


def test_a_missing_test_path_is_named(measured: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]) -> None:
    assert mt.main(["qa/report/headline.py", "--tests", "tests/no-such-dir"]) == 2
    assert "no such file or directory: tests/no-such-dir" in capsys.readouterr().err
    assert measured == []


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "nan", "inf"])
def test_stall_s_must_be_a_positive_number(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        mt.main(["qa/report/headline.py", "--stall-s", bad])
    assert exit_.value.code == 2
    assert "--stall-s: must be a positive number of seconds" in capsys.readouterr().err
