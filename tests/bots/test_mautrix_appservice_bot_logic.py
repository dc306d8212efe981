"""The application-service test bot's user for `--bug answer-outside-namespace`: a user the registration's as_token
may act for (same first localpart segment) but outside the scenario's sub-namespace."""

from __future__ import annotations

import re

from tests.lazy_module import LazyModule

# Imported by the first test that runs, not at collection (tests/lazy_module.py).
bot = LazyModule("tests.bots.mautrix_appservice_bot")


def test_the_outsider_is_outside_the_sub_namespace_and_inside_the_registration_s() -> None:
    stray = bot.outsider("@mqa_as-1a2b3c4d-bot:localhost")
    assert stray == "@mqa_as-stray-1a2b3c4d-bot:localhost"
    assert not stray.startswith("@mqa_as-1a2b3c4d-")
    # No scenario's sub-namespace (`mqa_as-<8 hex>-`) holds it either: it is nobody's bot.
    assert not re.match(r"^@mqa_as-[0-9a-f]{8}-", stray)
    assert re.fullmatch(r"@mqa_as-[^:]*:localhost", stray)


def test_a_localpart_without_a_dash_still_gets_one() -> None:
    assert bot.outsider("@bot:hs") == "@bot-stray-:hs"


def test_the_bug_is_offered() -> None:
    assert "answer-outside-namespace" in bot.BUGS


def test_the_forgetful_set_never_holds_a_transaction_id() -> None:
    seen = bot.Forgetful()
    seen.add("mqa-1")
    assert "mqa-1" not in seen and "no-txn-dedupe" in bot.BUGS


def test_the_out_of_order_variant_is_offered() -> None:
    assert "redelivered-late" in bot.BUGS
