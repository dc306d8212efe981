"""Redaction of secrets from text, data and files on disk (pure apart from reading the files it scans)."""

from __future__ import annotations

import json
from pathlib import Path

from qa.shared.redact import MIN_SECRET_LENGTH, REDACTED, redact, redact_data, redact_lines, scan_for_secrets


def test_the_placeholder_and_the_minimum_length() -> None:
    assert REDACTED == "[REDACTED]"
    # Secrets shorter than this are refused at input (qa.urls, live settings), never silently left unredacted.
    assert MIN_SECRET_LENGTH == 8


def test_a_secret_of_exactly_the_minimum_length_is_redacted_and_a_shorter_one_is_not() -> None:
    assert redact("pin 12345678 and 1234567", ["12345678", "1234567"]) == f"pin {REDACTED} and 1234567"


def test_every_occurrence_is_redacted() -> None:
    assert redact("tokentok tokentok-tokentok", ["tokentok-"]) == f"tokentok {REDACTED}tokentok"
    assert redact("aaaaaaaa aaaaaaaa", ["aaaaaaaa"]) == f"{REDACTED} {REDACTED}"


def test_a_secret_containing_another_is_replaced_whole_whichever_is_listed_first() -> None:
    text = "key=abcdabcd-efghefgh-ijkl;"
    expected = f"key={REDACTED};"
    assert redact(text, ["abcdabcd", "abcdabcd-efghefgh-ijkl"]) == expected
    assert redact(text, ["abcdabcd-efghefgh-ijkl", "abcdabcd"]) == expected
    assert redact(text, ["efghefgh", "abcdabcd-efghefgh", "abcdabcd-efghefgh-ijkl"]) == expected


def test_no_secrets_leaves_text_alone() -> None:
    assert redact("plain", []) == "plain"
    assert redact("plain", ["", "abc"]) == "plain"
    assert redact("short-secret abcdefg", ["abcdefg"]) == "short-secret abcdefg", "below the minimum: untouched"


def test_redact_data_redacts_keys_values_and_nested_containers() -> None:
    secret = "sk-live-1234"
    data = {
        "k": f"Bearer {secret}",
        secret: 1,
        "list": [secret, 2, None, {"deep": (secret, 3.5)}],
        "n": 7,
        "flag": True,
    }
    assert redact_data(data, [secret]) == {
        "k": f"Bearer {REDACTED}",
        REDACTED: 1,
        "list": [REDACTED, 2, None, {"deep": [REDACTED, 3.5]}],
        "n": 7,
        "flag": True,
    }
    assert redact_data(secret, [secret]) == REDACTED
    assert redact_data(("x", secret), [secret]) == ["x", REDACTED]


def test_redact_data_without_usable_secrets_returns_the_value_itself() -> None:
    data = {"a": ("tuple",)}
    assert redact_data(data, []) is data
    assert redact_data(data, ["abc", ""]) is data


def test_redact_data_applies_the_longest_secret_first_too() -> None:
    assert redact_data(["abcdabcd-efgh"], ["abcdabcd", "abcdabcd-efgh"]) == [REDACTED]


def test_scan_returns_the_index_of_each_secret_per_file_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.log").write_text("token=syt-abcdef")
    (tmp_path / "a.json").write_text("nothing here")
    (tmp_path / "sub" / "c.txt").write_text("sk-key-0001 and syt-abcdef")
    found = scan_for_secrets(tmp_path, ["abcdefg", "syt-abcdef", "", "sk-key-0001", "absent-1"])
    assert found == [(tmp_path / "b.log", 1), (tmp_path / "sub" / "c.txt", 1), (tmp_path / "sub" / "c.txt", 3)]


def test_scan_finds_a_secret_of_exactly_the_minimum_length(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("pin 12345678 and 1234567")
    assert scan_for_secrets(str(tmp_path), ["12345678", "1234567"]) == [(tmp_path / "f", 0)]  # type: ignore[arg-type]


def test_scan_finds_the_json_escaped_form(tmp_path: Path) -> None:
    secret = 'pa"ss\\wörd'
    (tmp_path / "plain.txt").write_text(f"x {secret} x", encoding="utf-8")
    (tmp_path / "summary.json").write_text(json.dumps({"k": secret}, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "clean.json").write_text(json.dumps({"k": "other"}), encoding="utf-8")
    assert scan_for_secrets(tmp_path, [secret]) == [(tmp_path / "plain.txt", 0), (tmp_path / "summary.json", 0)]


def test_scan_of_an_empty_directory_finds_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert scan_for_secrets(tmp_path, ["sk-live-1234"]) == []


def test_scan_does_not_report_a_near_miss_of_the_escaped_form(tmp_path: Path) -> None:
    # A leak check that cries wolf gets ignored: only the whole secret, plain or escaped, counts.
    secret = 'abcd"efgh'
    (tmp_path / "near.json").write_text(json.dumps({"k": 'Xbcd"efgh', "j": 'abcd"efgX'}))
    assert scan_for_secrets(tmp_path, [secret]) == []
    (tmp_path / "hit.json").write_text(json.dumps({"k": secret}))
    assert scan_for_secrets(tmp_path, [secret]) == [(tmp_path / "hit.json", 0)]


def test_a_big_file_is_redacted_in_pieces_and_no_secret_is_split_by_a_cut(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 28: a bot log of hundreds of megabytes is redacted without being read whole; a secret that spans
    the boundary between two pieces is still found."""
    from qa.shared import redact as module

    monkeypatch.setattr(module, "REDACT_CHUNK", 16)
    secret = "hunter2-secret"
    text = "".join(f"line {i} {secret if i % 3 == 0 else 'plain'}\n" for i in range(50)) + secret
    path = tmp_path / "bot.log"
    path.write_text(text)
    assert module.redact_file(path, [secret]) is True
    assert path.read_text() == text.replace(secret, module.REDACTED)
    assert module.redact_file(path, [secret]) is False, "nothing left: the file is only read"
    for start in range(0, 40):
        assert module.safe_cut(b"x" * start + b"abcdefgh" + b"y" * 40, start + 4, [b"abcdefgh"]) == start
    assert module.safe_cut(b"abcdefgh", 8, [b"abcdefgh"]) == 8
    assert module.safe_cut(b"abcdefghabcdefgh", 12, [b"abcdefgh"]) == 8
    assert module.safe_cut(b"zzzz", -3, [b"abcdefgh"]) == 0
    assert module.safe_cut(b"aaaaaaaaXbbbbbbbb", 12, [b"Xbbbbbbbb", b"aaaaaaaaX"]) == 0


# --- what the mutation run of redact.py's chunking (issue 28) found untested ------------------------------------


def test_a_cut_moved_back_for_one_secret_is_checked_again_for_the_others() -> None:
    """Moving the cut before one secret can make another straddle the new cut: safe_cut goes on until no secret
    does, whatever order the secrets come in (one pass in the wrong order would split `aaaaaaaaX` and leak it)."""
    from qa.shared.redact import safe_cut

    buffer = b"aaaaaaaaXbbbbbbbb"
    assert safe_cut(buffer, 12, [b"aaaaaaaaX", b"Xbbbbbbbb"]) == 0
    assert safe_cut(buffer, 12, [b"Xbbbbbbbb", b"aaaaaaaaX"]) == 0


def test_overlapping_secrets_straddling_a_piece_boundary_are_both_redacted(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qa.shared import redact as module

    monkeypatch.setattr(module, "REDACT_CHUNK", 20)
    path = tmp_path / "bot.log"
    # The first piece would end at 11, inside `Xbbbbbbbb` (9 to 18); the cut moved before it, to 9, falls inside
    # `aaaaaaaaaX` (0 to 10), looked at first (the longer) and missed until then: the cut goes to 0.
    path.write_bytes(b"aaaaaaaaaXbbbbbbbb tail aaaaaaaaaX\n")
    assert module.redact_file(path, ["Xbbbbbbbb", "aaaaaaaaaX"]) is True
    assert path.read_bytes() == b"[REDACTED]bbbbbbbb tail [REDACTED]\n"


def test_a_file_is_read_in_pieces_of_one_mebibyte(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The memory bound itself: a file of 2.5 MiB is three pieces and what is carried, none of them whole."""
    from qa.shared import redact as module

    assert module.REDACT_CHUNK == 1 << 20
    path = tmp_path / "bot.log"
    path.write_bytes(b"x" * (5 << 19))
    pieces = [len(p) for p in module._chunks(path, [b"abcdefgh"])]
    assert sum(pieces) == 5 << 19 and max(pieces) <= 1 << 20 and len(pieces) == 4, pieces


def test_lines_redacted_together_are_redacted_as_each_would_be_alone() -> None:
    """A bot's output is redacted a chunk at a time (redact_lines); no secret may match across two lines, and
    every line comes out as `redact` makes it, newlines in a line or in a secret included."""
    import random

    from qa.shared.redact import redact_lines

    rng = random.Random(7)
    pool = ["abcdefgh", "abcdefghij", "cdefghab", "gh\nabcdef", "xx\nyyzzww"]
    for _ in range(400):
        secrets = rng.sample(pool, rng.randint(0, 3))
        lines = ["".join(rng.choice("abcdefghxyzw\n ") for _ in range(rng.randint(0, 30)))
                 for _ in range(rng.randint(0, 6))]
        assert redact_lines(lines, secrets) == [redact(line, secrets) for line in lines], (lines, secrets)
    # The two seams by name: a secret split by a line end stays split (as line by line), whole ones go.
    assert redact_lines(["key abcd", "efgh", "abcdefgh"], ["abcdefgh"]) == ["key abcd", "efgh", REDACTED]
    assert redact_lines(["a\nb", "abcdefgh"], ["abcdefgh"]) == ["a\nb", REDACTED]
    assert redact_lines(["ab", "cdefghij"], ["b\ncdefghi"]) == ["ab", "cdefghij"]
    assert redact_lines([], ["abcdefgh"]) == [] and redact_lines(["x"], []) == ["x"]


def test_lines_without_newlines_are_redacted_in_one_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The point of redact_lines: a chunk of a bot's output costs one search per secret, not one per line."""
    from qa.shared import redact as module

    calls: list[str] = []
    real = module._Compiled.redact
    monkeypatch.setattr(module._Compiled, "redact", lambda self, text: calls.append(text) or real(self, text))
    assert module.redact_lines(["a abcdefgh", "b", "c abcdefgh"], ["abcdefgh"]) == [f"a {REDACTED}", "b",
                                                                                    f"c {REDACTED}"]
    assert calls == ["a abcdefgh\nb\nc abcdefgh"]
    calls.clear()
    assert module.redact_lines(["a", "b\nabcdefgh"], ["abcdefgh"]) == ["a", f"b\n{REDACTED}"]
    assert calls == ["a", "b\nabcdefgh"], "a line holding a newline: line by line"


def _redact_as_before(text: str, secrets: list[str]) -> str:
    """redact() as it was before the secret list was prepared once: sorted afresh on every call."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def test_prepared_secrets_redact_the_same_bytes_as_sorting_them_per_call() -> None:
    import random

    rng = random.Random(29)
    for _ in range(400):
        # A small alphabet, so secrets overlap, contain each other and sit side by side in the text.
        secrets = ["".join(rng.choice("ab]D") for _ in range(rng.randint(6, 12))) for _ in range(rng.randint(0, 5))]
        text = "".join(rng.choice("ab]D [") for _ in range(rng.randint(0, 40)))
        expected = _redact_as_before(text, secrets)
        assert redact(text, secrets) == expected, (text, secrets)
        assert redact_data([text], secrets) == [expected]
        assert redact_lines(text.split(" "), secrets) == [_redact_as_before(p, secrets) for p in text.split(" ")]


def test_a_secret_list_that_grows_is_redacted_with_its_new_secret() -> None:
    secrets = ["first-secret"]
    assert redact("first-secret second-secret", secrets) == f"{REDACTED} second-secret"
    secrets.append("second-secret")
    assert redact("first-secret second-secret", secrets) == f"{REDACTED} {REDACTED}"


def test_a_text_as_long_as_the_shortest_secret_is_still_redacted() -> None:
    assert redact("12345678", ["12345678", "abcdefghij"]) == REDACTED
    assert redact("1234567", ["12345678", "abcdefghij"]) == "1234567"
    assert redact_data({"12345678": "x"}, ["12345678", "abcdefghij"]) == {REDACTED: "x"}


def test_a_secret_list_is_sorted_once_for_many_texts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qa.shared import redact as module

    sorts: list[int] = []
    real = module._usable
    monkeypatch.setattr(module, "_usable", lambda secrets: sorts.append(1) or real(secrets))
    secrets = ["sorted-once-secret-1", "sorted-once-secret-22"]
    for _ in range(50):
        assert redact("a sorted-once-secret-22 b", secrets) == f"a {REDACTED} b"
    assert redact_data({f"k{i}": "sorted-once-secret-1" for i in range(50)}, secrets) == {
        f"k{i}": REDACTED for i in range(50)}
    assert len(sorts) <= 3, "once for the list, once for redact_data's own check, once for its prepared form"


def test_redact_data_looks_only_for_secrets_it_can_find_and_redacts_the_same() -> None:
    """The secrets a tree's strings cannot hold are skipped, but one that appears only once another is replaced
    (it straddles or lies inside the inserted REDACTED) is still replaced, exactly as the whole list would."""
    import random

    rng = random.Random(2929)
    letters = "[REDACTED]ab"
    for _ in range(600):
        secrets = ["".join(rng.choice(letters) for _ in range(rng.randint(8, 11))) for _ in range(rng.randint(1, 6))]
        texts = ["".join(rng.choice(letters + " ") for _ in range(rng.randint(0, 30))) for _ in range(3)]
        texts.append(rng.choice(secrets) + rng.choice(["", "ab", "]a"]))
        assert redact_data({"t": texts}, secrets) == {"t": [_redact_as_before(t, secrets) for t in texts]}, (
            texts, secrets)


def test_a_secret_that_appears_only_after_another_is_replaced_is_replaced() -> None:
    first, straddler = "qqqqqqqqqqqq", "EDACTED]xyz"  # the longer goes first
    assert _redact_as_before("qqqqqqqqqqqqxyz", [first, straddler]) == f"[R{REDACTED}"
    assert redact_data(["qqqqqqqqqqqqxyz"], [first, straddler]) == [f"[R{REDACTED}"]
    inside = "REDACTED"  # no bracket, but inside every replacement
    assert _redact_as_before("qqqqqqqqqqqq", [first, inside]) == f"[{REDACTED}]"
    assert redact_data(["qqqqqqqqqqqq"], [first, inside]) == [f"[{REDACTED}]"]


def test_redact_data_with_the_joiner_in_a_secret_still_redacts() -> None:
    secrets = ["abc\0defgh", "abc\ndefgh", "plain-secret"]
    assert redact_data(["x abc\0defgh y", "plain-secret", "abc\ndefgh", "abc", "defgh"], secrets) == [
        f"x {REDACTED} y", REDACTED, REDACTED, "abc", "defgh"]


def test_a_secret_ending_or_starting_at_a_replacement_is_replaced() -> None:
    first = "qqqqqqqqqqqq"
    for text, later in (("abcdefgqqqqqqqqqqqq", "abcdefg["), ("qqqqqqqqqqqqabcdefg", "]abcdefg")):
        expected = _redact_as_before(text, [first, later])
        assert expected != text.replace(first, REDACTED), expected  # the later one was replaced too
        assert redact_data([text], [first, later]) == [expected]


def test_only_the_secrets_a_tree_can_hold_are_replaced_in_it() -> None:
    from qa.shared.redact import _able_to_occur

    usable = ["secret-absent-1", "secret-present", "secret-[bracket", "REDACTED"]
    assert _able_to_occur(usable, {"k": ["a secret-present b"], "secret-absent": 1}) == usable[1:]
    assert _able_to_occur(usable, ["secret-absent-", "1"]) == usable[2:], "strings are not searched as one"


def test_the_finder_answers_as_a_search_for_each_needle_would() -> None:
    import random

    from qa.shared.redact import _Finder

    rng = random.Random(29)
    for _ in range(500):
        alphabet = bytes(rng.sample(range(256), rng.randint(2, 6)))
        needles = tuple(bytes(rng.choice(alphabet) for _ in range(rng.randint(8, 10)))
                        for _ in range(rng.randint(1, 4)))
        piece = bytes(rng.choice(alphabet + b" \n") for _ in range(rng.randint(0, 80)))
        if rng.random() < 0.3:
            at = rng.randint(0, len(piece))
            piece = piece[:at] + rng.choice(needles) + piece[at:]
        assert _Finder(needles).found_in(piece) == any(n in piece for n in needles), (needles, piece)


def test_the_finder_without_a_byte_outside_the_needles_searches_the_piece() -> None:
    from qa.shared.redact import _Finder

    everything = bytes(range(256))
    finder = _Finder((everything, b"needle-1"))
    assert finder.runs is None
    assert _Finder((b"needle-1",)).runs is not None, "ordinary needles are looked for in their runs"
    assert finder.found_in(b"a needle-1 b") and not finder.found_in(b"a needle-2 b")
    assert finder.found_in(b"x" + everything)


def test_a_needle_inside_a_longer_run_of_its_alphabet_is_found() -> None:
    from qa.shared.redact import _Finder

    finder = _Finder((b"syt_secret",))
    assert finder.found_in(b'{"token": "Bearer syt_secret_and_more"}')
    assert finder.found_in(b"syt_secret")
    assert not finder.found_in(b"syt_secre t syt-secret")


def test_a_sweep_makes_the_needles_once_for_all_its_files(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qa.shared import redact as module

    made: list[str] = []
    real = module._needles
    monkeypatch.setattr(module, "_needles", lambda secret: made.append(secret) or real(secret))
    secrets = ["sweep-secret-one", "sweep-secret-two"]
    for i in range(20):
        (tmp_path / f"f{i}.log").write_text(f"line {i} sweep-secret-two\n" if i % 2 else f"clean {i}\n")
    changed = [module.redact_file(tmp_path / f"f{i}.log", secrets) for i in range(20)]
    assert changed == [bool(i % 2) for i in range(20)]
    assert (tmp_path / "f1.log").read_text() == f"line 1 {REDACTED}\n"
    assert sorted(made) == sorted(secrets), "each secret's needles are made once"


def test_the_runs_are_of_the_needles_bytes_only_and_the_finder_is_made_once() -> None:
    from qa.shared.redact import _Finder, _finder

    finder = _Finder((b"abcdefgh", b"hgfedcba"))
    assert finder.runs is not None
    pattern, joiner = finder.runs
    assert pattern.findall(b"abcdefghX abcdXefgh hhhhhhhhh") == [b"abcdefgh", b"hhhhhhhhh"]
    assert joiner not in b"abcdefgh"
    assert _finder((b"made-once",)) is _finder((b"made-once",))
