"""The artifact directory is checked before a run starts anything (qa.harness.output_dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qa.harness.output_dir import check_output_dir
from qa.kernel.errors import ConfigError


def test_a_new_or_existing_directory_is_fine(tmp_path: Path) -> None:
    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "not" / "yet" / "there")
    assert not (tmp_path / "not").exists(), "checking must not create anything"


def test_an_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=r"--output-dir .*summary.json exists and is not a directory"):
        check_output_dir(path)
    with pytest.raises(ConfigError, match=r"summary\.json is not a directory"):
        check_output_dir(path / "run")


def test_a_directory_this_process_cannot_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root writes through any mode bits, so the permission itself is simulated; os.access is what decides.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ConfigError, match=r"not writable \(.* is where it would be created\)"):
        check_output_dir(tmp_path / "run", "the artifact directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_output_dir(tmp_path / "run")
    finally:
        tmp_path.chmod(0o700)
