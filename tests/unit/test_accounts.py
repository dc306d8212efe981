"""Bots of several accounts (issue 33): the bot file's `accounts`, the launch contract's MATRIX_QA_ACCOUNTS, and
every judgement that asks "did the bot say this" counting any of the bot's accounts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qa.evidence.edits import ChainRules, check_chain
from qa.evidence.events import is_bot_sender
from qa.evidence.order import unwanted_replies
from qa.evidence.pairing import Trigger, is_bot_message, latest_body, pair_reply
from qa.harness.botfile import account_clashes, load_bot_file
from qa.harness.capabilities import missing, skip_reason
from qa.harness.launch import build_launch
from qa.kernel.errors import ConfigError
from qa.report.markdown import accounts_that_spoke
from qa.report.summary import ScenarioResult, StepResult
from qa.run.options import check_bot_accounts
from qa.scenario.context import ScenarioContext
from tests.unit.test_launch import _facts

MAIN, AGENT, DRIVER = "@bot:hs", "@agent:hs", "@driver:hs"
BOT = frozenset({MAIN, AGENT})
SESSION = {"user_id": AGENT, "password": "pw-agent-123", "access_token": "tok-agent-123", "device_id": "AGENTDEV"}


def _bot(tmp_path: Path, accounts: str) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(f"name: b\ncommand: [python]\naccounts: {accounts}\n")
    return path


def _msg(event_id: str, sender: str, body: str = "hi", room: str = "!r", **content: object) -> dict:
    return {"type": "m.room.message", "event_id": event_id, "sender": sender, "room_id": room, "_seenMs": 10.0,
            "content": {"msgtype": "m.text", "body": body, **content}}


# --- the bot file --------------------------------------------------------------------------------------------


def test_accounts_are_read_in_order(tmp_path: Path) -> None:
    assert load_bot_file(_bot(tmp_path, "[router, agent_2]")).accounts == ["router", "agent_2"]
    assert load_bot_file(_bot(tmp_path, "[]")).accounts == []
    assert load_bot_file(_bot(tmp_path, f"[{'a' * 32}]")).accounts == ["a" * 32]  # the longest name `from:` takes
    with pytest.raises(ConfigError, match=r"accounts\[0\]: String should have at most 32 characters"):
        load_bot_file(_bot(tmp_path, f"[{'a' * 33}]"))


@pytest.mark.parametrize(("accounts", "message"), [
    ("[router, agent, router]", "accounts: account 'router' is named twice"),
    ("[bot]", "accounts: 'bot' is the bot's main account"),
    ("[Router]", "accounts[0]: String should match pattern"),
    ("router", "accounts: Input should be a valid list"),
])
def test_a_bad_account_list_is_one_error_naming_the_field_and_line(tmp_path: Path, accounts: str,
                                                                   message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_bot_file(_bot(tmp_path, accounts))
    assert "bot.yaml:3:" in str(caught.value) and message in str(caught.value)


def test_an_account_named_like_a_test_user_is_refused_before_the_run(tmp_path: Path) -> None:
    bot = load_bot_file(_bot(tmp_path, "[router, alice]"))
    assert account_clashes(bot, ["driver", "alice"]) == ["alice"]
    assert account_clashes(bot, ["driver"]) == []
    check_bot_accounts(bot, [SimpleNamespace(id="one", actors=["driver"])])
    with pytest.raises(ConfigError, match=r"bot.yaml: accounts: 'alice' is also a test user of scenario two"):
        check_bot_accounts(bot, [SimpleNamespace(id="one", actors=["driver"]),
                                 SimpleNamespace(id="two", actors=["driver", "alice"])])


# --- the launch ----------------------------------------------------------------------------------------------


def test_the_accounts_reach_the_environment_and_the_template(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ accounts.agent.user_id }} {{ accounts | tojson }}")
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [python]\naccounts: [agent]\nconfig_template: t.j2\n")
    bot = load_bot_file(tmp_path / "b.yaml")
    launch = build_launch(bot, _facts(tmp_path, accounts={"agent": SESSION}), {}, {"PATH": "/bin"})
    assert json.loads(launch.env["MATRIX_QA_ACCOUNTS"]) == {"agent": SESSION}
    assert launch.config_text == f"{AGENT} " + json.dumps({"agent": SESSION})


def test_a_bot_of_one_account_gets_no_accounts_variable(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [python]\n")
    launch = build_launch(load_bot_file(tmp_path / "b.yaml"), _facts(tmp_path), {},
                          {"PATH": "/bin", "MATRIX_QA_ACCOUNTS": "{\"forged\": {}}"})
    assert "MATRIX_QA_ACCOUNTS" not in launch.env  # not even one the harness inherited


def test_a_bot_file_may_not_set_the_accounts_variable(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [python]\nenv: {MATRIX_QA_ACCOUNTS: x}\n")
    with pytest.raises(ConfigError, match="MATRIX_QA_ACCOUNTS belong to the launch contract"):
        load_bot_file(tmp_path / "b.yaml")


# --- whose message it is -------------------------------------------------------------------------------------


def test_any_of_the_bot_accounts_is_the_bot() -> None:
    assert is_bot_sender(AGENT, BOT) and is_bot_sender(MAIN, BOT) and not is_bot_sender(DRIVER, BOT)
    assert is_bot_sender(MAIN, MAIN) and not is_bot_sender(AGENT, MAIN)
    assert is_bot_message(_msg("$a", AGENT), BOT, "!r") and not is_bot_message(_msg("$a", AGENT), MAIN, "!r")


def test_a_reply_from_the_extra_account_is_paired_by_relation() -> None:
    trigger = Trigger("$t", "!r", "ask", 5.0)
    reply = _msg("$a", AGENT, **{"m.relates_to": {"m.in_reply_to": {"event_id": "$t"}}})
    pairing = pair_reply(trigger, [reply], BOT, None, frozenset())
    assert pairing is not None and pairing.event["event_id"] == "$a" and pairing.method == "relation"
    assert pair_reply(trigger, [reply], MAIN, None, frozenset()) is None


def test_an_unwanted_reply_from_the_extra_account_is_caught() -> None:
    trigger = Trigger("$t", "!r", "ask", 5.0)
    reply = _msg("$a", AGENT, **{"m.relates_to": {"m.in_reply_to": {"event_id": "$t"}}})
    assert [u.event_id for u in unwanted_replies(trigger, None, [reply], BOT, None)] == ["$a"]


def _edit(event_id: str, sender: str, target: str, body: str) -> dict:
    return _msg(event_id, sender, f"* {body}", **{"m.new_content": {"msgtype": "m.text", "body": body},
                                                 "m.relates_to": {"rel_type": "m.replace", "event_id": target}})


def test_only_the_sender_of_a_message_edits_it_even_among_the_bot_accounts() -> None:
    draft = _msg("$d", AGENT, "draft")
    assert latest_body(draft, [draft, _edit("$e1", AGENT, "$d", "final")], BOT) == "final"
    # Matrix ignores an m.replace by anyone but the sender: another of the bot's accounts changes nothing.
    assert latest_body(draft, [draft, _edit("$e2", MAIN, "$d", "hijacked")], BOT) == "draft"
    problems = check_chain(draft, [_edit("$e2", MAIN, "$d", "hijacked")], BOT, ChainRules(min_edits=1))
    assert "edits not sent by the bot: $e2" in problems
    assert not [p for p in check_chain(draft, [_edit("$e1", AGENT, "$d", "final")], BOT, ChainRules(min_edits=1))
                if "not sent by the bot" in p]


def _ctx(accounts: dict[str, str]) -> ScenarioContext:
    return ScenarioContext(scenario=None, homeserver=None, provider=None, actors={}, bot=None,  # type: ignore[arg-type]
                           bot_user_id=MAIN, bot_name="bot", rooms={}, markers=None, artifact_dir=Path("."),
                           bot_accounts=accounts)


def test_the_context_names_each_account() -> None:
    ctx = _ctx({"bot": MAIN, "agent": AGENT})
    assert ctx.bot_ids.ids == BOT and AGENT in ctx.bot_ids and DRIVER not in ctx.bot_ids
    assert (ctx.account_of(MAIN), ctx.account_of(AGENT), ctx.account_of(DRIVER)) == ("bot", "agent", None)
    assert _ctx({}).bot_ids.ids == frozenset({MAIN})


# --- from: and the report ------------------------------------------------------------------------------------


def test_from_names_the_account_that_must_answer() -> None:
    from qa.scenario.steps.replies import ExpectReply

    step = ExpectReply.model_validate({"to": "ask", "from": "agent"})
    ctx = _ctx({"bot": MAIN, "agent": AGENT})
    assert step.bot_accounts() == ["agent"]
    assert step._sender_problems(ctx, _msg("$a", AGENT)) == [] and ctx.account == "agent"
    assert step._sender_problems(ctx, _msg("$a", MAIN)) == [
        f"the reply came from the bot's account 'bot' ({MAIN}), expected its account 'agent' ({AGENT})"]
    assert ctx.account == "bot"
    assert ExpectReply.model_validate({"to": "ask", "from": "bot"}).bot_accounts() == []
    one = _ctx({})
    assert ExpectReply.model_validate({"to": "ask"})._sender_problems(one, _msg("$a", MAIN)) == []
    assert one.account is None  # a bot of one account: the report says nothing


def test_a_scenario_naming_an_account_the_bot_lacks_is_skipped_with_the_reason() -> None:
    scenario = SimpleNamespace(requires=[], implied_needs=lambda: [], state_mutations=lambda: [],
                               bot_accounts=lambda: [("agent", "step 2 (expect_reply)")] * 2)
    assert missing(scenario, [], (), ["agent"]) == []
    lacking = missing(scenario, [], (), ["router"])
    assert skip_reason("b", lacking) == "skipped: bot 'b' lacks 'account agent' (step 2 (expect_reply))"
    main = SimpleNamespace(requires=[], implied_needs=lambda: [], state_mutations=lambda: [],
                           bot_accounts=lambda: [("bot", "step 1 (expect_reply)")])
    assert missing(main, [], (), []) == []  # the main account is always there
    older = SimpleNamespace(requires=[], implied_needs=lambda: [], state_mutations=lambda: [])
    assert missing(older, [], (), []) == []  # a scenario object that names no accounts at all


def test_the_report_says_which_account_answered() -> None:
    steps = [StepResult(index=1, kind="send", status="pass"),
             StepResult(index=2, kind="expect_reply", status="pass", account="agent"),
             StepResult(index=3, kind="expect_reply", status="pass", account="bot")]
    summary = SimpleNamespace(scenarios=[ScenarioResult(id="one", title="t", status="pass", steps=steps),
                                         ScenarioResult(id="two", title="t", status="pass")])
    assert accounts_that_spoke(summary) == [("one", "step 2 agent, step 3 bot")]  # type: ignore[arg-type]


def test_every_report_says_which_account_answered() -> None:
    """The markdown, the HTML page and the JUnit XML name the account of each checked reply; a failing step's
    JUnit text says whose reply it judged."""
    import xml.etree.ElementTree as ET

    from qa.report.html import render_html
    from qa.report.junit import render_junit
    from qa.report.markdown import render_markdown
    from qa.report.summary import Failure
    from tests.unit.test_report_render import make_summary

    passed = ScenarioResult(id="one", title="t", status="pass", steps=[
        StepResult(index=1, kind="send", status="pass"),
        StepResult(index=2, kind="expect_reply", status="pass", account="rab-agent-1f2e")])
    failed = ScenarioResult(id="two", title="t", status="fail", steps=[
        StepResult(index=1, kind="send", status="pass"),
        StepResult(index=2, kind="expect_reply", status="fail", account="bot")],
        failure=Failure(step=2, stepKind="expect_reply", expected="reply to 'ask'", seen=["from the router"]))
    quiet = ScenarioResult(id="three", title="t", status="pass", steps=[StepResult(index=1, kind="send",
                                                                                    status="pass")])
    summary = make_summary([passed, failed, quiet], status="fail", exitCode=1)
    line = "Which of the bot's accounts answered: `one` step 2 rab-agent-1f2e · `two` step 2 bot"
    assert line in render_markdown(summary)
    assert ("<p>Which of the bot's accounts answered: <code>one</code> step 2 rab-agent-1f2e · "
            "<code>two</code> step 2 bot</p>") in render_html(summary)
    cases = {c.get("name"): c for c in ET.fromstring(render_junit(summary).split("?>", 1)[1]).iter("testcase")}
    assert cases["one"].findtext("system-out") == "the bot's accounts that answered: step 2 rab-agent-1f2e"
    assert cases["two"].findtext("system-out") == "the bot's accounts that answered: step 2 bot"
    assert (cases["two"].findtext("failure") or "").startswith(
        "step 2 (expect_reply), answered by the bot's account 'bot'\nexpected: reply to 'ask'")
    assert cases["three"].find("system-out") is None
    alone = make_summary([quiet])  # a bot of one account: no line anywhere
    assert "accounts answered" not in render_markdown(alone) and "accounts answered" not in render_html(alone)


# --- registration: token -------------------------------------------------------------------------------------


def _registering(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(f"name: b\ncommand: [python]\n{body}\n")
    return path


def test_registration_needs_a_prefix_that_is_not_the_harness_users(tmp_path: Path) -> None:
    bot = load_bot_file(_registering(tmp_path, "registration: token\nregistration_prefix: rab-"))
    assert (bot.registration, bot.registration_prefix) == ("token", "rab-")
    for body, message in [
        ("registration: token", "registration: token needs registration_prefix"),
        ("registration_prefix: rab-", "registration_prefix needs registration: token"),
        ("registration: token\nregistration_prefix: mqa-bots-", "registration_prefix 'mqa-bots-' overlaps"),
        ("registration: token\nregistration_prefix: mq", "registration_prefix 'mq' overlaps"),
        ("registration: open\nregistration_prefix: rab-", "registration: Input should be 'token', got 'open'"),
        ("registration: token\nregistration_prefix: Rab", "registration_prefix: String should match pattern"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_bot_file(_registering(tmp_path, body))
    # Bounds and defaults of the fields these rules read.
    long_prefix = load_bot_file(_registering(tmp_path, f"registration: token\nregistration_prefix: {'r' * 32}"))
    assert long_prefix.registration_prefix == "r" * 32
    with pytest.raises(ConfigError, match="registration_prefix: String should have at most 32 characters"):
        load_bot_file(_registering(tmp_path, f"registration: token\nregistration_prefix: {'r' * 33}"))
    plain = load_bot_file(_registering(tmp_path, ""))
    assert (plain.accounts, plain.registration, plain.registration_prefix, plain.say, plain.lock_probe) == (
        [], None, None, None, None)
    # The whole-file rules' messages, whole: each is the line's last words.
    for body, message in [
        ("registration: token", "registration: token needs registration_prefix: the localpart prefix of the "
                                "accounts the bot registers, so the harness knows their messages are the bot's"),
        ("registration_prefix: rab-", "registration_prefix needs registration: token"),
        ("say: '!e {text}'\ncapabilities: [model]", "say is for a bot without a model, and capabilities claims "
                                                   "`model`: a bot with a model is sent the prompts themselves (drop "
                                                   "one of the two)"),
        ("fork_server: {}", 'fork_server needs a command of the form ["{python}", "-m", MODULE, …]: the fork server '
                            "runs MODULE as `python -m` would"),
        ("say: '" + "x" * 494 + " {text}'", "say: Value should have at most 500 items after validation, not 501"),
        ("state_mutations: {" + "m" * 65 + ": [x]}", "String should have at most 64 characters"),
        ("state_mutations: {m: []}", "state_mutations.m: List should have at least 1 item after validation, not 0"),
        ("registration: token\nregistration_prefix: mqa-", "registration_prefix 'mqa-' overlaps the harness's own "
                                                          "users (mqa-…)"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_bot_file(_registering(tmp_path, body))
        assert str(caught.value).endswith(f": {message}"), caught.value


def test_registration_on_a_homeserver_the_run_does_not_own_needs_the_users_token(tmp_path: Path) -> None:
    from qa.run.options import check_registration

    bot = load_bot_file(_registering(tmp_path, "registration: token\nregistration_prefix: rab-"))
    check_registration(bot, "synapse", {})
    check_registration(bot, "external", {"MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT": "users-own"})
    with pytest.raises(ConfigError, match=r"bot.yaml: registration: token needs the run's own homeserver .*"
                                          r"--homeserver external set MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT"):
        # The harness's own token (for its test users) is not one for the bot.
        check_registration(bot, "external", {"MATRIX_QA_REGISTRATION_TOKEN": "harness-own"})
    check_registration(load_bot_file(_bot(tmp_path, "[]")), "external", {})  # a bot that does not ask


def test_the_token_is_in_the_environment_only(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ user_id }}")
    (tmp_path / "b.yaml").write_text("name: b\ncommand: [python]\nconfig_template: t.j2\nregistration: token\n"
                                     "registration_prefix: rab-\n")
    bot = load_bot_file(tmp_path / "b.yaml")
    launch = build_launch(bot, _facts(tmp_path, registration_token="tok-reg-123"), {},
                          {"PATH": "/bin", "MATRIX_QA_REGISTRATION_TOKEN": "inherited"})
    assert launch.env["MATRIX_QA_REGISTRATION_TOKEN"] == "tok-reg-123"
    from qa.harness.launch import template_context

    assert "tok-reg-123" not in json.dumps(template_context(bot, _facts(tmp_path, registration_token="tok-reg-123"),
                                                            None), default=str)
    plain = build_launch(load_bot_file(_bot(tmp_path, "[]")), _facts(tmp_path), {},
                         {"PATH": "/bin", "MATRIX_QA_REGISTRATION_TOKEN": "inherited"})
    assert "MATRIX_QA_REGISTRATION_TOKEN" not in plain.env  # the user's token never reaches a bot that did not ask


def test_accounts_the_bot_registered_are_known_by_their_prefix() -> None:
    from qa.evidence.events import BotIdentity

    bot = BotIdentity(frozenset({MAIN}), "rab-")
    assert "@rab-1f2e:hs" in bot and MAIN in bot and DRIVER not in bot and "@xrab-1:hs" not in bot
    assert "@rab-1:hs" not in BotIdentity(frozenset({MAIN}))
    assert 42 not in bot
    ctx = _ctx({})
    ctx.registered_prefix = "rab-"
    assert ctx.several_accounts and not _ctx({}).several_accounts and _ctx({"agent": AGENT}).several_accounts
    assert ctx.account_of("@rab-1f2e:hs") == "rab-1f2e" and ctx.account_of(DRIVER) is None


def test_an_account_the_bot_registered_is_named_by_its_localpart_after_the_prefix() -> None:
    from qa.evidence.events import BotIdentity

    bot = BotIdentity(frozenset({MAIN, AGENT}), "rab-")
    assert [bot.registered_name(u) for u in ("@rab-agent-1f2e:hs", "@rab-agent:hs", "@rab-agent_2.x:hs",
                                             "@rab-router=1:hs")] == ["agent", "agent", "agent_2", "router"]
    # No name: not the bot's, one the harness made, or nothing nameable after the prefix (`from:` needs a letter).
    assert [bot.registered_name(u) for u in (DRIVER, MAIN, AGENT, "@rab-:hs", "@rab-1f2e:hs", "@rab--x:hs", 7)] \
        == [None] * 7
    assert BotIdentity(frozenset({MAIN})).registered_name("@rab-agent:hs") is None  # no prefix: none registered
    # The prefix is cut exactly, never more nor less.
    assert BotIdentity(frozenset(), "rab-ag").registered_name("@rab-agent:hs") == "ent"


def _registering_ctx(accounts: dict[str, str] | None = None) -> ScenarioContext:
    ctx = _ctx(accounts or {})
    ctx.registered_prefix = "rab-"
    return ctx


def test_from_names_an_account_the_bot_registered_itself() -> None:
    from qa.scenario.steps.replies import ExpectReply

    step = ExpectReply.model_validate({"to": "ask", "from": "agent"})
    ctx = _registering_ctx()
    assert step._sender_problems(ctx, _msg("$a", "@rab-agent-1f2e:hs")) == []
    assert ctx.account == "rab-agent-1f2e"  # the report names the whole localpart
    assert step._sender_problems(ctx, _msg("$a", MAIN)) == [
        f"the reply came from the bot's account 'bot' ({MAIN}), expected its account 'agent' (one it registered "
        "itself: @rab-agent…)"]
    assert step._sender_problems(ctx, _msg("$a", "@rab-agents-1:hs")) == [
        "the reply came from the bot's account 'rab-agents-1' (@rab-agents-1:hs), expected its account 'agent' "
        "(one it registered itself: @rab-agent…)"]
    assert ctx.account == "rab-agents-1"
    # A name the bot file gives is that account only, never a registered one of the same name.
    named = _registering_ctx({"agent": AGENT})
    assert step._sender_problems(named, _msg("$a", AGENT)) == []
    assert step._sender_problems(named, _msg("$a", "@rab-agent-1:hs")) == [
        f"the reply came from the bot's account 'rab-agent-1' (@rab-agent-1:hs), expected its account 'agent' "
        f"({AGENT})"]
    main = ExpectReply.model_validate({"to": "ask", "from": "bot"})
    assert main._sender_problems(ctx, _msg("$a", MAIN)) == []
    assert main._sender_problems(ctx, _msg("$a", "@rab-bot-1:hs")) == [
        f"the reply came from the bot's account 'rab-bot-1' (@rab-bot-1:hs), expected its account 'bot' ({MAIN})"]
    # Without a prefix, a name the bot lacks (a scenario skipped before it ran, normally) is said plainly.
    assert _ctx({}).account_wanted("agent") == "an account the bot does not have"
    assert not _ctx({}).is_account("@rab-agent:hs", "agent")


def test_a_bot_that_registers_its_accounts_is_not_skipped_for_a_name_it_may_register() -> None:
    scenario = SimpleNamespace(requires=[], implied_needs=lambda: [], state_mutations=lambda: [],
                               bot_accounts=lambda: [("agent", "step 2 (expect_reply)")])
    assert missing(scenario, [], (), [], registers=True) == []
    assert [n.capability for n in missing(scenario, [], (), [], registers=False)] == ["account agent"]


async def test_a_backend_that_does_not_own_its_server_mints_no_token() -> None:
    from qa.homeserver.base import Homeserver
    from qa.kernel.errors import InfraError

    class Foreign(Homeserver):
        kind = "external"
        base_url = "http://x"

        async def start(self) -> None: ...
        async def stop(self) -> None: ...
        async def restart(self) -> None: ...
        async def register_user(self, localpart: str, password: str, *, admin: bool = False) -> Any: ...

    with pytest.raises(InfraError, match="the external homeserver backend cannot make registration tokens"):
        await Foreign().registration_token(1, 60)


async def test_the_scenario_token_is_minted_where_the_run_may_else_the_users(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.kernel.errors import QAError
    from qa.scenario.runner import REGISTRATION_USES, _registration_token

    asked: list[tuple[int, float]] = []

    class Owned:
        mints_registration_tokens = True
        secrets = ("admin-session-token",)

        async def registration_token(self, uses: int, valid_s: float) -> str:
            asked.append((uses, valid_s))
            return "minted-token-123"

    bot = load_bot_file(_registering(tmp_path, "registration: token\nregistration_prefix: rab-"))
    res = SimpleNamespace(bot_file=bot, homeserver=Owned(), secrets=[])
    monkeypatch.setenv("MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT", "users-token-123")
    assert await _registration_token(res, 60.0) == "minted-token-123"  # type: ignore[arg-type]
    assert asked == [(REGISTRATION_USES, 60.0)] and res.secrets == ["minted-token-123", "admin-session-token"]
    res.homeserver = SimpleNamespace(mints_registration_tokens=False)
    assert await _registration_token(res, 60.0) == "users-token-123"  # type: ignore[arg-type]
    monkeypatch.delenv("MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT")
    with pytest.raises(QAError, match="MATRIX_QA_REGISTRATION_TOKEN_FOR_BOT is not set"):
        await _registration_token(res, 60.0)  # type: ignore[arg-type]
    res.bot_file = load_bot_file(_bot(tmp_path, "[]"))
    assert await _registration_token(res, 60.0) is None  # type: ignore[arg-type]
