"""Secrets handed to the runner: refused in URLs, refused when too short to redact, redacted in copied files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from qa.homeserver.external import resolve_external_settings
from qa.kernel.errors import ConfigError
from qa.provider.live import resolve_live_settings
from qa.shared.redact import MIN_SECRET_LENGTH, REDACTED, redact_file
from qa.urls import clean_http_url, shown_url

SECRET = "s3cr3t-Value-42"
LIVE_ENV = {"OPENAI_API_KEY": "sk-test-key-long-enough"}


def live(base_url: str) -> object:
    return resolve_live_settings(model="m", base_url=base_url, timeout_s=None, max_retries=None, env=LIVE_ENV)


def external(url: str, token: str | None = "a-long-registration-token", secret: str | None = None) -> object:
    return resolve_external_settings(url=url, registration_token=token, shared_secret=secret, env={})


@pytest.mark.parametrize("url", [
    f"https://user:{SECRET}@api.example.org/v1",
    f"https://{SECRET}@api.example.org/v1",
    f"https://api.example.org/v1?api_key={SECRET}",
    f"https://api.example.org/v1?x=1&access_token={SECRET}",
    f"https://api.example.org/v1?api-key={SECRET}",
    f"https://api.example.org/v1?Password={SECRET}",
    f"https://api.example.org/v1#token={SECRET}",
    f"ftp://user:{SECRET}@api.example.org/v1",
    f"https://user:{SECRET}@api.example.org:99999/v1",
])
@pytest.mark.parametrize(("flag", "check"), [("--base-url", live), ("--homeserver-url", external)])
def test_credentials_in_a_url_are_refused_without_echoing_them(url: str, flag: str, check: object) -> None:
    with pytest.raises(ConfigError) as info:
        check(url)  # type: ignore[operator]
    message = str(info.value)
    assert flag in message
    assert SECRET not in message
    assert "\n" not in message


def test_an_ordinary_query_is_fine_for_the_model_api() -> None:
    assert clean_http_url("https://proxy.example.org/v1?region=eu", "--base-url", "x", "y").endswith("region=eu")


def test_shown_url_drops_userinfo_query_and_fragment() -> None:
    assert shown_url(f"https://u:{SECRET}@h.example/p?k={SECRET}#f") == "https://***@h.example/p"


@pytest.mark.parametrize(("token", "secret", "flag"), [
    ("abc", None, "--registration-token"),
    ("x" * (MIN_SECRET_LENGTH - 1), None, "--registration-token"),
    (None, "short", "--registration-shared-secret"),
])
def test_registration_secrets_too_short_to_redact_are_refused(token: str | None, secret: str | None,
                                                              flag: str) -> None:
    with pytest.raises(ConfigError, match="too short to keep out of the artifacts") as info:
        external("https://matrix.example.org", token, secret)
    assert flag in str(info.value)


def test_a_registration_token_of_the_minimum_length_is_accepted() -> None:
    external("https://matrix.example.org", "x" * MIN_SECRET_LENGTH)


def test_an_api_key_too_short_to_redact_is_refused() -> None:
    with pytest.raises(ConfigError, match="could not be redacted"):
        resolve_live_settings(model="m", base_url=None, timeout_s=None, max_retries=None,
                              env={"OPENAI_API_KEY": "sk-1234"})


def test_redact_file_rewrites_text_with_every_secret_redacted(tmp_path: Path) -> None:
    quoted = 'pa"ss\\word-9'
    path = tmp_path / "bot-trace.jsonl"
    path.write_text(f"error: invalid key {SECRET}\n" + json.dumps({"echo": quoted}) + "\n", encoding="utf-8")
    path.chmod(0o640)
    assert redact_file(path, [SECRET, quoted]) is True
    text = path.read_text(encoding="utf-8")
    assert SECRET not in text and "pa\\\"ss" not in text
    assert text.count(REDACTED) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["bot-trace.jsonl"], "no temporary file left behind"


def test_redact_file_leaves_clean_and_binary_files_untouched(tmp_path: Path) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text("nothing to hide\n")
    binary = tmp_path / "core.bin"
    binary.write_bytes(b"\x00\x01" + SECRET.encode() + b"\xff")
    before = clean.stat().st_mtime_ns, binary.read_bytes()
    assert redact_file(clean, [SECRET]) is False
    assert redact_file(binary, [SECRET]) is False
    assert (clean.stat().st_mtime_ns, binary.read_bytes()) == before


def test_redact_file_replaces_the_file_rather_than_writing_into_it(tmp_path: Path) -> None:
    # A reader holding the old file (a log tail) keeps a whole file; the path gets a new inode.
    path = tmp_path / "bot.log"
    path.write_text(f"key={SECRET}\n")
    inode = path.stat().st_ino
    with path.open() as held:
        redact_file(path, [SECRET])
        assert SECRET in held.read()
    assert path.stat().st_ino != inode
    assert SECRET not in path.read_text()


def test_redact_file_redacts_a_text_log_that_is_not_valid_utf8(tmp_path: Path) -> None:
    # A bot killed mid-write leaves its log cut inside a character; a library may log a Latin-1 byte. Neither
    # makes the log binary: its secrets must still go.
    cut = tmp_path / "bot.log"
    cut.write_bytes(f"key={SECRET}\nlast line é".encode()[:-1])
    latin1 = tmp_path / "lib.log"
    latin1.write_bytes(f"caf\xe9 key={SECRET}\n".encode("latin-1"))
    for path in (cut, latin1):
        assert redact_file(path, [SECRET]) is True
        assert SECRET.encode() not in path.read_bytes() and REDACTED.encode() in path.read_bytes()


def test_only_a_nul_in_the_first_8_kib_makes_a_file_binary(tmp_path: Path) -> None:
    late_nul = tmp_path / "late.log"
    late_nul.write_bytes(b"a" * 8192 + b"\0" + SECRET.encode())
    early_nul = tmp_path / "early.bin"
    early_nul.write_bytes(b"a" * 8191 + b"\0" + SECRET.encode())
    assert redact_file(late_nul, [SECRET]) is True and SECRET.encode() not in late_nul.read_bytes()
    assert redact_file(early_nul, [SECRET]) is False and SECRET.encode() in early_nul.read_bytes()


def test_a_crash_mid_redaction_leaves_a_hidden_file_named_for_the_one_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bot.log"
    path.write_text(f"key={SECRET}\n")
    seen: list[str] = []

    def crash(src: str, dst: object) -> None:
        seen.append(Path(src).name)
        raise OSError("disk gone")

    monkeypatch.setattr("qa.shared.redact.os.replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        redact_file(path, [SECRET])
    assert len(seen) == 1 and seen[0].startswith(".bot.log.") and seen[0].endswith(".redacting")
    assert [p.name for p in tmp_path.iterdir()] == ["bot.log"] and SECRET in path.read_text()
