"""The kernel's lock-file convention: where the lock lives, its payload, reading it, pid liveness, the safe
removal. (The doctor's judgement of one lock, also in qa.kernel.lockfile, is tested in test_doctor.py.)"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, get_args

import pytest

from qa.kernel import lockfile
from qa.kernel.clock import mono_ms
from qa.kernel.lockfile import (
    LOCK_SUFFIX,
    LockFile,
    lock_path_for,
    pid_alive,
    read_lock,
    remove_if_same,
    valid_payload,
)

GOOD = {"pid": 10, "createdMono": 1.5, "token": "tok", "attempt": "turn-1", "maxHoldMs": 5000}


def write(path: Path, payload: Any) -> Path:
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_states_a_judgement_can_have() -> None:
    assert get_args(lockfile.State) == ("held", "over-max-hold", "owner-dead", "unreadable", "left-held")


def test_what_was_observed_and_judged_cannot_change_afterwards(tmp_path: Path) -> None:
    seen = read_lock(write(tmp_path / "x.jsonl.lock", GOOD))
    obs = lockfile.Observation(path="p", pid=1, alive=True, age_ms=1.0, attempt="a", promised_max_hold_ms=None)
    verdict = lockfile.Judgement("held", problem=False, fixable=False, why="")
    for frozen, field in ((seen, "payload"), (obs, "pid"), (verdict, "problem")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(frozen, field, None)


def test_the_lock_file_sits_beside_its_transcript() -> None:
    assert lock_path_for(Path("/s/sessions/a-1.jsonl")) == Path("/s/sessions/a-1.jsonl.lock")
    assert lock_path_for(Path("/s/sessions/a-1.jsonl")).name.endswith(LOCK_SUFFIX)
    assert LOCK_SUFFIX == ".jsonl.lock"


# --- the payload ----------------------------------------------------------------------------------------------


def test_a_valid_payload_is_returned_as_it_is() -> None:
    assert valid_payload(dict(GOOD)) == GOOD
    assert valid_payload({**GOOD, "createdMono": 2}) is not None, "an int stamp is a number too"
    without_attempt = {k: v for k, v in GOOD.items() if k != "attempt"}
    assert valid_payload(without_attempt) == without_attempt


@pytest.mark.parametrize("bad", [
    [], "x", None,
    {**GOOD, "pid": 0}, {**GOOD, "pid": -3}, {**GOOD, "pid": True}, {**GOOD, "pid": "10"}, {**GOOD, "pid": 1.0},
    {k: v for k, v in GOOD.items() if k != "pid"},
    {**GOOD, "createdMono": "1"}, {**GOOD, "createdMono": False}, {**GOOD, "createdMono": None},
    {**GOOD, "token": ""}, {**GOOD, "token": 5}, {k: v for k, v in GOOD.items() if k != "token"},
    {**GOOD, "attempt": 3}, {**GOOD, "attempt": None},
])
def test_an_invalid_payload_is_none(bad: Any) -> None:
    assert valid_payload(bad) is None


def test_pid_one_is_a_valid_owner() -> None:
    assert valid_payload({**GOOD, "pid": 1}) is not None


# --- reading it -----------------------------------------------------------------------------------------------


def test_no_file_is_no_lock(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "x.jsonl.lock") is None


def test_a_readable_lock_names_its_holder(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", GOOD)
    seen = read_lock(path)
    assert seen is not None
    st = path.stat()
    assert seen == LockFile(payload=GOOD, inode=st.st_ino, mtime_ns=st.st_mtime_ns, size=st.st_size)
    assert (seen.pid, seen.token, seen.attempt) == (10, "tok", "turn-1")
    assert seen.identity() == (st.st_ino, "tok")


@pytest.mark.parametrize("content", ["", "{", "\xff\xfe", json.dumps({**GOOD, "pid": 0}), "[1]"])
def test_an_unreadable_lock_is_still_a_lock_known_by_inode_mtime_and_size(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.jsonl.lock"
    path.write_bytes(content.encode("latin-1"))
    seen = read_lock(path)
    assert seen is not None and seen.payload is None
    assert (seen.pid, seen.token, seen.attempt) == (None, None, None)
    st = path.stat()
    assert seen.identity() == (st.st_ino, st.st_mtime_ns, st.st_size)
    assert seen.size == len(content.encode("latin-1"))


def test_a_payload_larger_than_a_stat_said_is_read_whole_or_not_at_all(tmp_path: Path) -> None:
    payload = {**GOOD, "attempt": "x" * 5000}
    seen = read_lock(write(tmp_path / "x.jsonl.lock", payload))
    assert seen is not None and seen.payload == payload


def test_age_comes_from_the_monotonic_stamp(tmp_path: Path) -> None:
    seen = read_lock(write(tmp_path / "x.jsonl.lock", {**GOOD, "createdMono": mono_ms() - 5_000}))
    assert seen is not None
    # From the stamp (5 s ago), not the file's fresh mtime (~0) nor in the wrong unit (x1000); the upper bound is
    # loose: a loaded machine may stop this process for a while between the write and the look.
    assert 5_000 <= seen.age_ms() < 60_000


def test_age_of_a_stamp_from_another_boot_or_an_unreadable_lock_comes_from_the_mtime(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", {**GOOD, "createdMono": mono_ms() + 10**9})
    old = time.time() - 120
    os.utime(path, (old, old))
    seen = read_lock(path)
    assert seen is not None and 119_000 < seen.age_ms() < 180_000  # loose above, as in the test before
    write(path, "torn")
    os.utime(path, (old, old))
    torn = read_lock(path)
    assert torn is not None and 119_000 < torn.age_ms() < 180_000


def test_when_a_lock_was_taken_is_its_monotonic_stamp_or_unknown(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The contention probe reports it (heldSinceT); a guess from the mtime would be another clock.
    monkeypatch.setattr(lockfile, "mono_ms", lambda: 100.0)
    path = tmp_path / "x.jsonl.lock"
    assert read_lock(write(path, {**GOOD, "createdMono": 60.5})).created_mono() == 60.5
    assert read_lock(write(path, {**GOOD, "createdMono": 100.0})).created_mono() == 100.0
    assert read_lock(write(path, {**GOOD, "createdMono": 100.1})).created_mono() is None  # another boot's clock
    assert read_lock(write(path, "torn")).created_mono() is None


def test_a_lock_stamped_this_instant_is_zero_old_not_from_the_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    monkeypatch.setattr(lockfile, "mono_ms", lambda: 100.0)
    path = write(tmp_path / "x.jsonl.lock", {**GOOD, "createdMono": 100.0})
    old = time.time() - 120
    os.utime(path, (old, old))
    seen = read_lock(path)
    assert seen is not None and seen.age_ms() == 0.0


def test_an_mtime_in_the_future_is_no_age_at_all(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", "torn")
    future = time.time() + 3600
    os.utime(path, (future, future))
    seen = read_lock(path)
    assert seen is not None and seen.age_ms() == 0.0


# --- pid liveness ---------------------------------------------------------------------------------------------


def test_liveness_is_asked_with_signal_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # First in this section: with any other signal, the next test would signal the test process itself.
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(lockfile.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    assert pid_alive(42) is True
    assert sent == [(42, 0)]


def test_pid_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pid_alive(os.getpid()) is True
    assert pid_alive(dead_pid()) is False

    def forbidden(pid: int, sig: int) -> None:
        raise PermissionError(1, "not ours")

    monkeypatch.setattr(lockfile.os, "kill", forbidden)
    assert pid_alive(12345) is True, "a pid we may not signal exists: alive, the safe direction"


# --- the safe removal -----------------------------------------------------------------------------------------


def test_remove_if_same_removes_the_lock_that_was_judged(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", GOOD)
    seen = read_lock(path)
    assert seen is not None
    assert remove_if_same(path, seen.identity()) is True
    assert list(tmp_path.iterdir()) == [], "nothing left aside"


def test_remove_if_same_of_a_missing_lock_is_false(tmp_path: Path) -> None:
    assert remove_if_same(tmp_path / "x.jsonl.lock", (1, "tok")) is False
    assert list(tmp_path.iterdir()) == []


def test_remove_if_same_puts_a_different_lock_back(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", GOOD)
    judged = read_lock(path)
    assert judged is not None
    path.unlink()
    write(path, {**GOOD, "token": "fresh"})
    assert remove_if_same(path, judged.identity()) is False
    back = read_lock(path)
    assert back is not None and back.token == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl.lock"]


def test_remove_if_same_never_puts_one_back_over_a_newer_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    path = write(tmp_path / "x.jsonl.lock", {**GOOD, "token": "moved"})
    real_read = lockfile.read_lock

    def newer_appears(p: Path) -> LockFile | None:
        seen = real_read(p)
        write(path, {**GOOD, "token": "newest"})  # created by someone else while ours was aside
        return seen

    monkeypatch.setattr(lockfile, "read_lock", newer_appears)
    assert remove_if_same(path, (0, "judged")) is False
    monkeypatch.undo()
    now = read_lock(path)
    assert now is not None and now.token == "newest"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl.lock"], "the moved lock is gone (fenced)"


def test_remove_if_same_judges_an_unreadable_lock_by_inode_mtime_and_size(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl.lock", "torn")
    seen = read_lock(path)
    assert seen is not None
    assert remove_if_same(path, seen.identity()) is True
    assert not path.exists()


def test_exit_code_refuses_judgements_and_fixes_that_do_not_pair_up() -> None:
    ok = lockfile.Judgement("held", problem=False, fixable=False, why="")
    with pytest.raises(ValueError):
        lockfile.exit_code([ok, ok], [False])
