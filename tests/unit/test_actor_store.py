"""The test users' crypto store (qa.actors): its cheaper model binding keeps every store's data its own."""

from __future__ import annotations

from pathlib import Path

from nio.crypto import OlmAccount

from qa.actors import _TestUserStore


def test_two_stores_used_in_turn_each_read_and_write_their_own_database(tmp_path: Path) -> None:
    """Models are bound per call and never bound back: a call on one store after the other's must still reach
    its own database, for writes and for reads."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _TestUserStore("@a:x", "DEVA", str(tmp_path / "a"))
    b = _TestUserStore("@b:x", "DEVB", str(tmp_path / "b"))
    account_a, account_b = OlmAccount(), OlmAccount()
    a.save_account(account_a)
    b.save_account(account_b)
    for n in range(3):
        a.save_encrypted_rooms({f"!a{n}:x"})
        b.save_encrypted_rooms({f"!b{n}:x"})
        b.save_encrypted_rooms(set())
    assert a.load_encrypted_rooms() == {"!a0:x", "!a1:x", "!a2:x"}
    assert b.load_encrypted_rooms() == {"!b0:x", "!b1:x", "!b2:x"}
    loaded_a, loaded_b = a.load_account(), b.load_account()
    assert loaded_a is not None and loaded_b is not None
    assert loaded_a.identity_keys == account_a.identity_keys
    assert loaded_b.identity_keys == account_b.identity_keys
    # A store opened anew on the same files reads what was written, through the same binding.
    assert _TestUserStore("@a:x", "DEVA", str(tmp_path / "a")).load_encrypted_rooms() == a.load_encrypted_rooms()
