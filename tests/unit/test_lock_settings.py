from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from qa.kernel.lock_settings import (
    MAX_MS,
    SCOPES,
    LockConfigError,
    LockSettings,
    Scope,
    Source,
    resolve_lock_settings,
)

ENV = "MATRIX_QA_SESSION_WRITE_LOCK_"
EXPECTED = f"expected a whole number of milliseconds from 1 to {MAX_MS} (one day)"


def test_defaults_when_nothing_is_set() -> None:
    settings, sources = resolve_lock_settings(None, {})
    # The documented defaults, spelled out: comparing with LockSettings() would pass whatever they were.
    assert settings == LockSettings(acquire_timeout_ms=10_000, stale_ms=30_000, max_hold_ms=5_000, scope="narrow")
    assert (settings.acquire_timeout_ms, settings.stale_ms, settings.max_hold_ms) == (10_000, 30_000, 5_000)
    assert settings.scope == "narrow"
    assert settings.max_hold_ms < settings.acquire_timeout_ms < settings.stale_ms
    assert sources == {
        "acquireTimeoutMs": "default",
        "staleMs": "default",
        "maxHoldMs": "default",
        "scope": "default",
    }


def test_settings_cannot_be_changed_after_resolution() -> None:
    # One LockSettings is shared by every lock of a bot; a holder must not be able to change a waiter's view.
    settings, _ = resolve_lock_settings(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_hold_ms = 1  # type: ignore[misc]


def test_every_setting_has_its_own_env_variable() -> None:
    env = {
        ENV + "ACQUIRE_TIMEOUT_MS": "11",
        ENV + "STALE_MS": "22",
        ENV + "MAX_HOLD_MS": "33",
        ENV + "SCOPE": "attempt",
    }
    settings, sources = resolve_lock_settings({}, env)
    assert settings == LockSettings(acquire_timeout_ms=11, stale_ms=22, max_hold_ms=33, scope="attempt")
    assert set(sources.values()) == {"env"}


def test_one_millisecond_is_the_smallest_accepted_value() -> None:
    settings, _ = resolve_lock_settings({"maxHoldMs": 1}, {ENV + "STALE_MS": "1"})
    assert (settings.max_hold_ms, settings.stale_ms) == (1, 1)


def test_type_aliases_name_exactly_the_values_the_code_produces() -> None:
    # Scope and Source are what a type checker holds callers to; they must agree with the runtime values.
    assert get_args(Scope) == SCOPES == ("narrow", "attempt")
    _, from_env = resolve_lock_settings({"staleMs": 5}, {ENV + "SCOPE": "narrow"})
    assert set(get_args(Source)) == set(from_env.values()) == {"env", "config", "default"}


def test_env_beats_config_beats_default() -> None:
    config = {"acquireTimeoutMs": 2000, "staleMs": 9000, "scope": "attempt"}
    env = {ENV + "ACQUIRE_TIMEOUT_MS": "25", ENV + "SCOPE": "narrow", "UNRELATED": "x"}
    settings, sources = resolve_lock_settings(config, env)
    assert settings == LockSettings(acquire_timeout_ms=25, stale_ms=9000, max_hold_ms=5000, scope="narrow")
    assert sources == {
        "acquireTimeoutMs": "env",
        "staleMs": "config",
        "maxHoldMs": "default",
        "scope": "env",
    }


def test_empty_env_value_counts_as_unset() -> None:
    settings, sources = resolve_lock_settings({"staleMs": 1234}, {ENV + "STALE_MS": "  "})
    assert settings.stale_ms == 1234
    assert sources["staleMs"] == "config"


def test_digit_strings_with_whitespace_are_accepted() -> None:
    settings, _ = resolve_lock_settings({"maxHoldMs": "750"}, {ENV + "STALE_MS": " 60000\n"})
    assert (settings.max_hold_ms, settings.stale_ms) == (750, 60000)


@pytest.mark.parametrize("bad", ["12ms", "-1", "abc", "0", "1.5", "+5", "²"])
def test_bad_env_value_names_the_variable_and_value(bad: str) -> None:
    with pytest.raises(LockConfigError) as err:
        resolve_lock_settings({}, {ENV + "STALE_MS": bad})
    assert str(err.value) == f"{ENV}STALE_MS={bad!r}: {EXPECTED}"


@pytest.mark.parametrize("bad", ["12ms", -1, "abc", 0, 1.5, True, None])
def test_bad_config_value_names_the_field_and_value(bad: object) -> None:
    with pytest.raises(LockConfigError) as err:
        resolve_lock_settings({"acquireTimeoutMs": bad}, {})
    assert str(err.value) == f"session.writeLock.acquireTimeoutMs={bad!r}: {EXPECTED}"


def test_bad_scope_is_rejected_from_env_and_config() -> None:
    expected = r"^MATRIX_QA_SESSION_WRITE_LOCK_SCOPE='wide': expected one of narrow\|attempt$"
    with pytest.raises(LockConfigError, match=expected):
        resolve_lock_settings({}, {ENV + "SCOPE": "wide"})
    with pytest.raises(LockConfigError, match=r"session\.writeLock\.scope='wide'"):
        resolve_lock_settings({"scope": "wide"}, {})


def test_env_shadows_a_bad_config_value_but_not_a_different_field() -> None:
    # A valid env value shadows the config value, so the bad config value is never read.
    settings, _ = resolve_lock_settings({"staleMs": "bad"}, {ENV + "STALE_MS": "100"})
    assert settings.stale_ms == 100
    with pytest.raises(LockConfigError, match=r"session\.writeLock\.maxHoldMs"):
        resolve_lock_settings({"maxHoldMs": "bad"}, {ENV + "STALE_MS": "100"})


def test_unknown_config_keys_are_named_with_the_known_ones() -> None:
    with pytest.raises(LockConfigError) as err:
        resolve_lock_settings({"staleMS": 100, "acquireTimeout": 1}, {})
    assert str(err.value) == (
        "unknown setting session.writeLock.acquireTimeout, session.writeLock.staleMS "
        "(known: acquireTimeoutMs, staleMs, maxHoldMs, scope)"
    )


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(LockConfigError, match=r"^session\.writeLock must be a mapping, got \[1, 2\]$"):
        resolve_lock_settings([1, 2], {})  # type: ignore[arg-type]


@pytest.mark.parametrize("digits", [5000, 50, len(str(MAX_MS)) + 1])
def test_an_env_value_of_too_many_digits_is_a_short_clear_error(digits: int) -> None:
    # 5000 digits is past Python's int-string limit (4300): int() itself would raise a ValueError.
    name = ENV + "ACQUIRE_TIMEOUT_MS"
    with pytest.raises(LockConfigError, match=f"{name}=.*from 1 to {MAX_MS}") as info:
        resolve_lock_settings(None, {name: "9" * digits})
    assert len(str(info.value)) < 200


def test_durations_are_bounded_by_a_day_from_env_and_config() -> None:
    assert resolve_lock_settings({"staleMs": MAX_MS}, {})[0].stale_ms == MAX_MS
    assert resolve_lock_settings(None, {ENV + "STALE_MS": "000" + str(MAX_MS)})[0].stale_ms == MAX_MS
    with pytest.raises(LockConfigError, match=r"session\.writeLock\.staleMs"):
        resolve_lock_settings({"staleMs": MAX_MS + 1}, {})
    with pytest.raises(LockConfigError, match=ENV + "MAX_HOLD_MS"):
        resolve_lock_settings(None, {ENV + "MAX_HOLD_MS": str(MAX_MS + 1)})


def test_the_bound_is_one_day_in_milliseconds() -> None:
    # The error text promises "(one day)": the bound itself, not just whatever MAX_MS holds, is pinned.
    assert resolve_lock_settings({"maxHoldMs": 86_400_000}, {})[0].max_hold_ms == 86_400_000
    with pytest.raises(LockConfigError, match="from 1 to 86400000 \\(one day\\)"):
        resolve_lock_settings({"maxHoldMs": 86_400_001}, {})


def test_a_too_long_value_is_shown_cut_with_its_length_in_the_error() -> None:
    name = ENV + "STALE_MS"
    # repr of 38 characters plus its quotes is 40: shown whole; one more and it is cut to 20 plus the length.
    for value, shown in (("x" * 38, repr("x" * 38)), ("x" * 39, "'" + "x" * 19 + "… (41 characters)"),
                         ("9" * 9, "'999999999'"), ("9" * 5000, "'" + "9" * 19 + "… (5002 characters)")):
        with pytest.raises(LockConfigError) as info:
            resolve_lock_settings(None, {name: value})
        assert str(info.value) == f"{name}={shown}: {EXPECTED}"
