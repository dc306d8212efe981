"""The embedded agent's named state mutations: snapshot the sync position, later put it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.agent.state_tools import main


def test_snapshot_then_rewind_restores_the_old_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "sync-token.json"
    token.write_text('{"next_batch": "s1"}')
    assert main(["snapshot-sync", str(tmp_path)]) == 0
    token.write_text('{"next_batch": "s9"}')
    assert main(["rewind-sync", str(tmp_path)]) == 0
    assert token.read_text() == '{"next_batch": "s1"}'
    assert "rewound" in capsys.readouterr().out


def test_each_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rewind-sync", str(tmp_path)]) == 1
    assert "run snapshot-sync in an earlier stop first" in capsys.readouterr().err
    assert main(["snapshot-sync", str(tmp_path)]) == 1
    assert "has not synced yet" in capsys.readouterr().err
    assert main(["rewind", str(tmp_path)]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main([]) == 2
