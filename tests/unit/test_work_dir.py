"""The run's work dir goes to RAM only when nobody said otherwise and there is room."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.harness import work_dir
from qa.harness.work_dir import work_root


def test_an_explicit_tmpdir_always_wins(tmp_path: Path) -> None:
    assert work_root({"TMPDIR": "/somewhere"}, tmp_path) is None


def test_a_roomy_writable_shm_is_used(tmp_path: Path) -> None:
    assert work_root({}, tmp_path) == tmp_path  # tmp_path: a real writable folder on a disk with room


def test_no_shm_or_a_small_one_means_the_usual_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert work_root({}, tmp_path / "missing") is None
    monkeypatch.setattr(work_dir, "MIN_FREE_BYTES", 1 << 62)  # more than any disk here: "too small"
    assert work_root({}, tmp_path) is None
