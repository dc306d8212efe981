"""The deeper E2EE pieces without a homeserver: step validation, what scenarios need of a bot, the bot's
verification and key decisions against fakes, the crypto-store mutation, and artifact body stripping."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import KeyVerificationCancel, KeyVerificationKey, KeyVerificationStart

from qa.agent import state_tools
from qa.agent.config import AgentConfig
from qa.agent.verification import VERIFICATION, BotE2EE, devices_to_withhold
from qa.harness.capabilities import missing, needs, skip_reason
from qa.kernel.e2ee import sas_mismatch, session_comparison
from qa.scenario.artifacts import strip_transcript_bodies
from qa.scenario.loader import load_scenarios, validate_paths
from qa.scenario.steps.encryption import leaks

HEADER = "id: s\ntitle: t\nprofiles: [e2ee]\nrooms: {main: {encrypted: true}}\nsteps:\n"


def _write(tmp_path: Path, steps: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(HEADER + textwrap.dedent(steps))
    return path


def _errors(tmp_path: Path, steps: str) -> list[str]:
    return [str(e) for e in validate_paths([_write(tmp_path, steps)])]


# --- validation ----------------------------------------------------------------------------------------------


def test_a_device_must_be_logged_in_before_a_step_names_it(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, """\
        - send: {as: driver, mention: bot, body: hi, id: a}
        - expect_reply: {to: a, id: r}
        - expect_encrypted: {event: r, readable_by: [driver.phone]}
        - login_device: {as: driver, device: phone}
        """)
    assert "s.yaml:8:" in error and "steps[2].expect_encrypted.readable_by[0]" in error
    assert "unknown device 'driver.phone': add a login_device step before (devices so far: none)" in error


def test_verify_and_expect_verified_check_their_device_too(tmp_path: Path) -> None:
    errors = _errors(tmp_path, """\
        - login_device: {as: driver, device: phone}
        - verify: {as: driver, device: tablet, method: sas}
        - expect_verified: {as: driver, device: phone}
        - login_device: {as: driver, device: phone}
        """)
    assert len(errors) == 2, errors
    assert "steps[1].verify.device" in errors[0] and "'driver.tablet'" in errors[0]
    assert "devices so far: driver.phone" in errors[0]
    assert "steps[3].login_device.device" in errors[1] and "logged in already" in errors[1]


def test_a_device_list_names_known_actors(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, """\
        - send: {as: driver, mention: bot, body: hi, id: a}
        - expect_reply: {to: a, id: r}
        - expect_encrypted: {event: r, unreadable_by: [stranger]}
        """)
    assert "steps[2].expect_encrypted.unreadable_by[0]" in error and "unknown actor 'stranger'" in error


@pytest.mark.parametrize(("step", "message"), [
    ("{event: r, session: new}", "session: new|same and than: <step id> go together"),
    ("{event: r}", "needs session/than, readable_by and/or unreadable_by"),
    ("{event: r, readable_by: [driver], unreadable_by: [driver]}", "driver cannot be in both"),
    ("{event: nope, readable_by: [driver]}", "unknown step id 'nope'"),
])
def test_expect_encrypted_says_something_coherent(tmp_path: Path, step: str, message: str) -> None:
    [error] = _errors(tmp_path, f"""\
        - send: {{as: driver, mention: bot, body: hi, id: a}}
        - expect_reply: {{to: a, id: r}}
        - expect_encrypted: {step}
        """)
    assert "s.yaml:8:" in error and message in error


def test_verify_knows_only_sas(tmp_path: Path) -> None:
    [error] = _errors(tmp_path, "- verify: {as: driver, method: qr}\n")
    assert "s.yaml:6:" in error and "steps[0].verify.method" in error and "'sas'" in error


def test_room_keys_is_all_or_verified(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\nprofiles: [e2ee]\nbot: {roomKeys: some}\nsteps:\n  - restart_homeserver:\n")
    [error] = [str(e) for e in validate_paths([path])]
    assert "s.yaml:4:" in error and "bot.roomKeys" in error


# --- capabilities --------------------------------------------------------------------------------------------


def test_verification_steps_need_verification_and_the_trace(tmp_path: Path) -> None:
    [s] = load_scenarios([_write(tmp_path, "- verify: {as: driver, method: sas}\n"
                                           "- expect_verified: {as: driver}\n")])
    assert [(n.capability, n.why) for n in needs(s)] == [
        ("trace", "step 1 (verify)"), ("e2ee", "encrypted room"), ("verification", "step 1 (verify)")]
    reason = skip_reason("foreign", missing(s, ["e2ee", "trace"]))
    assert reason == "skipped: bot 'foreign' lacks 'verification' (step 1 (verify))"


def test_verified_only_key_sharing_needs_verification(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("id: s\ntitle: t\nprofiles: [e2ee]\nbot: {roomKeys: verified}\nsteps:\n  - restart_homeserver:\n")
    [s] = load_scenarios([path])
    assert [(n.capability, n.why) for n in needs(s)] == [("verification", "bot.roomKeys")]


def test_the_bot_device_steps_need_the_trace_and_a_device_login_only_e2ee(tmp_path: Path) -> None:
    [s] = load_scenarios([_write(tmp_path, "- login_device: {as: driver, device: phone}\n"
                                           "- delete_bot_device: {}\n")])
    found = {(n.capability, n.why) for n in needs(s)}
    assert found == {("e2ee", "encrypted room"), ("trace", "step 2 (delete_bot_device)")}


def test_the_library_scenarios_name_the_agent_mutation_and_capabilities_it_has() -> None:
    repo = Path(__file__).resolve().parents[2]
    from qa.harness.botfile import builtin_bot_file

    bot = builtin_bot_file()
    for s in load_scenarios([repo / "scenarios"]):
        lacking = missing(s, bot.abilities(), bot.state_mutations)
        # The one thing the agent cannot be: an application service (push faults need one; issue 33). Any other
        # need must be the agent's.
        pushed = any(rule.target == "push" for rule in s.faults)
        assert [n.capability for n in lacking] == (["appservice"] if pushed else []), s.id
    assert "corrupt-crypto-store" in bot.state_mutations and "verification" in bot.capabilities


# --- pure helpers ----------------------------------------------------------------------------------------------


def test_sas_mismatch_names_what_differs() -> None:
    same = {"emoji": ["Dog", "Cat"], "decimals": [1, 2, 3]}
    assert sas_mismatch(same, dict(same)) == []
    assert sas_mismatch(same, {"emoji": ["Dog", "Cat"], "decimals": [1, 2, 4]}) == [
        "decimals: ours [1, 2, 3] vs the bot's [1, 2, 4]"]
    assert len(sas_mismatch(same, {})) == 2


def test_session_comparison() -> None:
    assert session_comparison("a", "b", "new") is None and session_comparison("a", "a", "same") is None
    assert session_comparison("a", "a", "new") == "both use Megolm session a: the bot did not start a new one"
    assert session_comparison("a", "b", "same") == "Megolm sessions differ: a then b"
    assert "no Megolm session id" in str(session_comparison(None, "b", "new"))


def test_devices_to_withhold_leaves_out_ours_the_verified_and_the_already_blacklisted() -> None:
    devs = [SimpleNamespace(id=i) for i in ("OURS", "VER", "BLACK", "NEW")]
    out = devices_to_withhold(devs, "OURS", lambda d: d.id == "VER", lambda d: d.id == "BLACK")
    assert [d.id for d in out] == ["NEW"]


def test_strip_transcript_bodies_keeps_structure_not_content() -> None:
    text = json.dumps({"kind": "user", "eventId": "$e", "content": "secret words"}) + "\n{broken\n"
    out = [json.loads(line) for line in strip_transcript_bodies(text).splitlines()]
    assert out[0] == {"kind": "user", "eventId": "$e", "content": {"length": len('"secret words"')}}
    assert out[1] == {"unparsed": True, "length": len("{broken")}
    assert "secret" not in strip_transcript_bodies(text) and strip_transcript_bodies("") == ""


def test_leaks_report_the_label_never_the_text(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("xx TOKEN-1 yy")
    (tmp_path / "b.log").write_text("clean")
    found = leaks({"{token}": "TOKEN-1", "{token2}": "TOKEN-2"}, [tmp_path / "a.log", tmp_path / "b.log",
                                                                  tmp_path / "missing"])
    assert found == [f"{tmp_path / 'a.log'}: holds {{token}}"]


# --- the crypto-store mutation -------------------------------------------------------------------------------


def test_corrupt_crypto_store_overwrites_every_store_and_its_wal(tmp_path: Path, capsys: Any) -> None:
    store = tmp_path / "nio-store"
    store.mkdir()
    (store / "a.db").write_bytes(b"SQLite format 3\x00")
    (store / "a.db-wal").write_bytes(b"wal")
    assert state_tools.main(["corrupt-crypto-store", str(tmp_path)]) == 0
    assert (store / "a.db").read_bytes() == state_tools.GARBAGE and not (store / "a.db-wal").exists()
    assert "overwrote 1 crypto store file(s): a.db" in capsys.readouterr().out


def test_state_tools_refuse_what_they_cannot_do(tmp_path: Path, capsys: Any) -> None:
    assert state_tools.main(["nope", str(tmp_path)]) == 2
    assert state_tools.main(["corrupt-crypto-store", str(tmp_path / "gone")]) == 2
    capsys.readouterr()
    assert state_tools.main(["corrupt-crypto-store", str(tmp_path)]) == 1
    assert "no crypto store" in capsys.readouterr().err


# --- the bot's verification decisions, against a fake nio client ---------------------------------------------


class FakeTrace:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def emit(self, kind: str, **fields: Any) -> None:
        self.records.append({"type": kind, **fields})


class FakeSas:
    def __init__(self) -> None:
        self.other_olm_device = SimpleNamespace(id="DEV", user_id="@u:x")
        self.canceled = False
        self.verified = False

    def get_emoji(self) -> list[tuple[str, str]]:
        return [("🐶", "Dog")] * 7

    def get_decimals(self) -> tuple[int, ...]:
        return (1, 2, 3)


class FakeClient:
    def __init__(self, sas: FakeSas | None) -> None:
        self.key_verifications = {"tx": sas} if sas else {}
        self.calls: list[str] = []
        self.olm = SimpleNamespace(is_device_verified=lambda d: True)

    async def accept_key_verification(self, tx: str) -> None:
        self.calls.append("accept")

    async def cancel_key_verification(self, tx: str) -> None:
        self.calls.append("cancel")

    async def send_to_device_messages(self) -> None:
        self.calls.append("flush")

    async def confirm_short_auth_string(self, tx: str) -> None:
        self.calls.append("confirm")
        self.key_verifications[tx].verified = True

    def _invalidate_outbound_sessions(self, device: Any) -> None:
        self.calls.append("rotate")


def _config(**extra: Any) -> AgentConfig:
    return AgentConfig.model_validate({"homeserver": "http://h", "userId": "@bot:x", "stateDir": "/s",
                                       "rooms": {}, "model": {"baseUrl": "http://m", "model": "m"}, **extra})


def _start() -> KeyVerificationStart:
    return KeyVerificationStart.from_dict({"sender": "@u:x", "content": {
        "transaction_id": "tx", "from_device": "DEV", "method": "m.sas.v1", "key_agreement_protocols": ["curve25519"],
        "hashes": ["sha256"], "message_authentication_codes": ["hkdf-hmac-sha256"],
        "short_authentication_string": ["emoji", "decimal"]}})


async def test_the_bot_accepts_shows_its_sas_flushes_its_key_before_its_mac_and_rotates_when_done() -> None:
    trace, client = FakeTrace(), FakeClient(FakeSas())
    e2ee = BotE2EE(_config(), trace)  # type: ignore[arg-type]
    await e2ee.on_to_device(client, [_start()])  # type: ignore[arg-type]
    key = KeyVerificationKey.from_dict({"sender": "@u:x", "content": {"transaction_id": "tx", "key": "k"}})
    await e2ee.on_to_device(client, [key])  # type: ignore[arg-type]
    assert client.calls == ["accept", "flush", "confirm", "rotate"]
    kinds = [r["type"] for r in trace.records]
    assert kinds == ["verification.accepted", "verification.sas", "verification.done"]
    assert trace.records[1]["emoji"] == ["Dog"] * 7 and trace.records[1]["decimals"] == [1, 2, 3]


async def test_a_bot_that_refuses_verification_cancels_and_says_why() -> None:
    trace, client = FakeTrace(), FakeClient(FakeSas())
    await BotE2EE(_config(acceptVerification=False), trace).on_to_device(client, [_start()])  # type: ignore[arg-type]
    assert client.calls == ["cancel"]
    assert trace.records == [{"type": "verification.refused", "transactionId": "tx", "userId": "@u:x",
                              "deviceId": "DEV", "reason": "acceptVerification is off"}]


async def test_a_start_from_an_unknown_device_is_traced_and_a_cancel_ends_it() -> None:
    trace = FakeTrace()
    e2ee = BotE2EE(_config(), trace)  # type: ignore[arg-type]
    await e2ee.on_to_device(FakeClient(None), [_start()])  # type: ignore[arg-type]
    assert trace.records[-1]["type"] == "verification.unknown-device"
    cancel = KeyVerificationCancel.from_dict({"sender": "@u:x", "content": {
        "transaction_id": "tx", "code": "m.user", "reason": "no"}})
    await e2ee.on_to_device(FakeClient(FakeSas()), [cancel])  # type: ignore[arg-type]
    assert trace.records[-1] == {"type": "verification.cancelled", "transactionId": "tx", "userId": "@u:x",
                                 "deviceId": "DEV", "code": "m.user", "reason": "no"}


def test_verification_notices_are_recognised_and_the_mutation_turns_them_into_text() -> None:
    notice = {"content": {"msgtype": "m.key.verification.request", "body": "verify me"}}
    assert BotE2EE.is_verification_notice(notice) and not BotE2EE.is_verification_notice({"content": {}})
    assert BotE2EE(_config(), FakeTrace()).inbound_view(notice) is notice  # type: ignore[arg-type]
    mutated = BotE2EE(_config(answerVerificationNotices=True), FakeTrace()).inbound_view(notice)  # type: ignore[arg-type]
    assert mutated["content"] == {"msgtype": "m.text", "body": "verify me"}
    assert not BotE2EE.is_verification_notice(mutated)
    assert VERIFICATION == "verification"


def test_the_leaky_mutation_logs_decrypted_bodies_and_only_those(caplog: Any) -> None:
    e2ee = BotE2EE(_config(logDecryptedBodies=True), FakeTrace())  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="qa.agent.verification"):
        e2ee.inbound_view({"event_id": "$a", "content": {"body": "plain words"}})
        e2ee.inbound_view({"event_id": "$b", "decrypted": True, "content": {"body": "secret words"}})
    assert "secret words" in caplog.text and "plain words" not in caplog.text


# --- the bot's identity on disk --------------------------------------------------------------------------------


class FakeLoginClient:
    def __init__(self, device_id: str | None, fail: Exception | None = None) -> None:
        self.device_id = device_id
        self.fail = fail
        self.closed = False

    async def login(self, password: str, device_name: str) -> Any:
        if self.fail:
            raise self.fail
        self.device_id = self.device_id or "NEWDEVICE"
        return SimpleNamespace()

    async def close(self) -> None:
        self.closed = True


async def test_a_damaged_store_is_set_aside_and_a_new_device_logs_in(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import peewee

    from qa.agent.crypto_store import CryptoIdentity

    trace = FakeTrace()
    identity = CryptoIdentity(_config(stateDir=str(tmp_path), encryption=True), trace, "pw")  # type: ignore[arg-type]
    assert identity.device_id() == "MATRIXQABOT"  # nothing saved yet: the configured device
    identity.store.mkdir(parents=True)
    (identity.store / "old.db").write_text("damaged")
    (tmp_path / "nio-store.corrupt-1").mkdir()  # an earlier one is kept too
    monkeypatch.setattr(identity, "new_client", lambda device_id: FakeLoginClient(device_id))
    broken = FakeLoginClient("MATRIXQABOT", peewee.DatabaseError("file is not a database"))
    fresh = await identity.login(broken)  # type: ignore[arg-type]
    assert broken.closed and fresh.device_id == "NEWDEVICE" and identity.device_id() == "NEWDEVICE"
    assert (tmp_path / "nio-store.corrupt-2" / "old.db").read_text() == "damaged"
    assert [r["type"] for r in trace.records] == ["e2ee.store.corrupt", "e2ee.store.reset"]
    assert trace.records[0]["error"] == "DatabaseError: file is not a database"
    assert trace.records[0]["keptAt"] == "nio-store.corrupt-2"


async def test_with_the_reset_off_a_damaged_store_is_fatal(tmp_path: Path) -> None:
    import peewee

    from qa.agent.crypto_store import CryptoIdentity

    config = _config(stateDir=str(tmp_path), encryption=True, resetCorruptCryptoStore=False)
    identity = CryptoIdentity(config, FakeTrace(), "pw")  # type: ignore[arg-type]
    with pytest.raises(peewee.DatabaseError):
        await identity.login(FakeLoginClient("D", peewee.DatabaseError("bad")))  # type: ignore[arg-type]


async def test_a_new_device_whose_login_is_cancelled_is_closed_not_left_open(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A stop (SIGTERM) during the relogin cancels it: the fresh client, held by nobody else, must be closed.
    import asyncio

    from qa.agent.crypto_store import CryptoIdentity

    identity = CryptoIdentity(_config(stateDir=str(tmp_path), encryption=True), FakeTrace(), "pw")  # type: ignore[arg-type]
    made: list[FakeLoginClient] = []

    def new_client(device_id: str | None) -> FakeLoginClient:
        made.append(FakeLoginClient(device_id, asyncio.CancelledError()))
        return made[-1]

    monkeypatch.setattr(identity, "new_client", new_client)
    with pytest.raises(asyncio.CancelledError):
        await identity.relogin(FakeLoginClient("OLD"))  # type: ignore[arg-type]
    assert len(made) == 1 and made[0].closed
