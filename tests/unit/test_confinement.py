"""Every path a scenario names resolves, symlinks followed, to a regular file inside its library (qa.library)."""

from __future__ import annotations

import os
from pathlib import Path

from qa.library import confined


def test_a_file_inside_is_found_resolved(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(b"x")
    os.symlink("a.png", tmp_path / "media" / "b.png")
    assert confined(tmp_path / "media", "a.png") == ((tmp_path / "media" / "a.png").resolve(), None)
    assert confined(tmp_path / "media", "b.png") == ((tmp_path / "media" / "a.png").resolve(), None)


def test_escapes_loops_missing_and_non_files_are_refused(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink("/proc/self/environ", media / "environ.png")
    os.symlink("../secret", media / "up.png")
    os.symlink("loop2", media / "loop1")
    os.symlink("loop1", media / "loop2")
    os.symlink("gone", media / "dangling")
    (media / "dir").mkdir()
    os.mkfifo(media / "fifo")
    assert confined(media, "environ.png")[0] is None and "outside" in str(confined(media, "environ.png")[1])
    assert confined(media, "up.png") == (None, f"resolves to {(tmp_path / 'secret').resolve()}, outside "
                                               f"{media.resolve()}: refused")
    assert confined(media, "loop1") == (None, "a symlink loop")
    assert confined(media, "dangling") == (None, "not found")
    assert confined(media, "missing") == (None, "not found")
    assert "not a regular file" in str(confined(media, "dir")[1])
    assert "not a regular file" in str(confined(media, "fifo")[1])
    assert confined(tmp_path / "nowhere", "a") == (None, "not found")
