"""The embedded agent's boot: it adopts the session the harness hands it (no password login) while it is that
device, logs in with its password once it had to become another one, and is ready once it joined its rooms."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import KeysUploadError

from qa.agent import boot, matrix
from qa.agent.config import AgentConfig
from qa.agent.crypto_store import CryptoIdentity, HandedSession
from qa.agent.matrix import FIRST_SYNC_FILTER, SYNC_FILTER, MatrixBot, join_beside_key_upload
from tests.unit.test_e2ee_deep import FakeTrace


def _config(tmp_path: Path, **extra: Any) -> AgentConfig:
    return AgentConfig.model_validate({"homeserver": "http://h", "userId": "@bot:x", "stateDir": str(tmp_path),
                                       "rooms": {"!a:x": {}, "!b:x": {}},
                                       "model": {"baseUrl": "http://m", "model": "m"}, **extra})


class FakeClient:
    def __init__(self, device_id: str | None) -> None:
        self.device_id = device_id
        self.calls: list[tuple[str, ...]] = []

    def restore_login(self, user_id: str, device_id: str, access_token: str) -> None:
        self.calls.append(("restore", user_id, device_id, access_token))

    async def login(self, password: str, device_name: str) -> Any:
        self.calls.append(("login", password))
        self.device_id = self.device_id or "NEWDEVICE"
        return object()

    async def close(self) -> None:
        self.calls.append(("close",))


HANDED = HandedSession("tok", "HANDED")


def test_a_handed_session_needs_both_the_token_and_the_device() -> None:
    both = {"MATRIX_QA_ACCESS_TOKEN": "t", "MATRIX_QA_DEVICE_ID": "D"}
    assert HandedSession.from_env(both) == HandedSession("t", "D")
    assert HandedSession.from_env({"MATRIX_QA_ACCESS_TOKEN": "t"}) is None
    assert HandedSession.from_env({"MATRIX_QA_DEVICE_ID": "D"}) is None
    assert HandedSession.from_env({"MATRIX_QA_ACCESS_TOKEN": "", "MATRIX_QA_DEVICE_ID": "D"}) is None


async def test_the_bot_adopts_the_handed_session_and_stays_that_device_across_restarts(tmp_path: Path) -> None:
    identity = CryptoIdentity(_config(tmp_path), FakeTrace(), "pw", HANDED)  # type: ignore[arg-type]
    assert identity.device_id() == "HANDED"  # nothing saved yet: the handed session's device
    client = FakeClient(identity.device_id())
    assert await identity.login(client) is client  # type: ignore[arg-type]
    assert client.calls == [("restore", "@bot:x", "HANDED", "tok")]  # no password login
    assert identity.login_method == "handed-session"
    restarted = CryptoIdentity(_config(tmp_path), FakeTrace(), "pw", HANDED)  # type: ignore[arg-type]
    assert restarted.device_id() == "HANDED"
    again = FakeClient(restarted.device_id())
    await restarted.login(again)  # type: ignore[arg-type]
    assert again.calls == [("restore", "@bot:x", "HANDED", "tok")]


async def test_without_a_handed_session_the_bot_logs_in_with_its_password(tmp_path: Path) -> None:
    identity = CryptoIdentity(_config(tmp_path), FakeTrace(), "pw")  # type: ignore[arg-type]
    assert identity.device_id() == "MATRIXQABOT"
    client = FakeClient(identity.device_id())
    await identity.login(client)  # type: ignore[arg-type]
    assert client.calls == [("login", "pw")] and identity.login_method == "password"


async def test_once_the_bot_became_another_device_a_restart_logs_in_as_that_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = CryptoIdentity(_config(tmp_path), FakeTrace(), "pw", HANDED)  # type: ignore[arg-type]
    monkeypatch.setattr(identity, "new_client", FakeClient)
    old = FakeClient("HANDED")
    fresh = await identity.relogin(old)  # type: ignore[arg-type]
    # The handed token belongs to the deleted device: a new device comes from the password.
    assert fresh.calls == [("login", "pw")] and fresh.device_id == "NEWDEVICE"  # type: ignore[attr-defined]
    assert old.calls == [("close",)]
    restarted = CryptoIdentity(_config(tmp_path), FakeTrace(), "pw", HANDED)  # type: ignore[arg-type]
    assert restarted.device_id() == "NEWDEVICE"
    client = FakeClient(restarted.device_id())
    await restarted.login(client)  # type: ignore[arg-type]
    assert client.calls == [("login", "pw")] and client.device_id == "NEWDEVICE"


def test_the_first_sync_asks_for_little_and_later_ones_for_the_catch_up() -> None:
    assert FIRST_SYNC_FILTER["room"]["state"]["lazy_load_members"] is True
    assert FIRST_SYNC_FILTER["room"]["timeline"]["limit"] <= 10
    assert SYNC_FILTER["room"]["timeline"]["limit"] == 100 and "state" not in SYNC_FILTER["room"]
    for sync_filter in (FIRST_SYNC_FILTER, SYNC_FILTER):  # no push rules, but m.direct still comes
        assert sync_filter["account_data"] == {"not_types": ["m.push_rules"]}, sync_filter


@pytest.mark.parametrize(("synced", "joined", "ready"), [
    (set(), {"!a:x", "!b:x"}, True),      # joined both from invites: ready before a sync shows them
    ({"!a:x"}, {"!b:x"}, True),           # one known from the sync, one just joined
    ({"!a:x"}, set(), False),             # a configured room neither synced nor joined
    ({"!a:x", "!b:x"}, set(), True),      # a restart: both in the sync
])
def test_ready_once_every_configured_room_is_known(tmp_path: Path, synced: set[str], joined: set[str],
                                                   ready: bool) -> None:
    trace = FakeTrace()
    bot = MatrixBot(_config(tmp_path), trace, "pw")  # type: ignore[arg-type]
    bot.client.rooms = dict.fromkeys(synced)  # type: ignore[assignment]
    bot._joined = set(joined)
    bot._maybe_ready()
    assert [r["type"] for r in trace.records] == (["ready"] if ready else [])


def test_a_boot_phase_is_its_wall_time_split_into_cpu_a_core_s_queue_and_io() -> None:
    marks = [("start", 0.0, 10.0, 5.0), ("setup", 8.0, 14.0, 7.0), ("sync", 108.0, 20.0, 37.0),
             ("ready", 110.0, 23.0, None)]
    assert boot.phases(marks) == {
        "setup": {"wallMs": 8.0, "cpuMs": 4.0, "queueMs": 2.0, "ioMs": 2.0},
        "sync": {"wallMs": 100.0, "cpuMs": 6.0, "queueMs": 30.0, "ioMs": 64.0},
        # a kernel that stops telling the queue: counted 0, and the I/O never below 0
        "ready": {"wallMs": 2.0, "cpuMs": 3.0, "queueMs": 0.0, "ioMs": 0.0}}


def test_a_phase_met_again_is_summed_so_the_phases_add_up_to_the_whole() -> None:
    # A start that took two syncs: the second must not overwrite the first.
    marks = [("start", 0.0, 0.0, 0.0), ("sync", 500.0, 5.0, 0.0), ("invites", 510.0, 6.0, 0.0),
             ("sync", 1000.0, 11.0, 0.0), ("ready", 1011.0, 12.0, 0.0)]
    got = boot.phases(marks)
    assert got["sync"] == {"wallMs": 990.0, "cpuMs": 10.0, "queueMs": 0.0, "ioMs": 980.0}
    assert sum(p["wallMs"] for p in got.values()) == 1011.0


def test_a_start_that_never_gets_ready_keeps_a_bounded_list_and_still_marks_ready() -> None:
    marks = boot.BootMarks()
    for _ in range(10 * boot.MAX_MARKS):
        marks.mark("sync")
    summary = marks.summary()
    assert len(marks._marks) == boot.MAX_MARKS and marks._marks[-1][0] == "ready"
    assert set(summary["phases"]) == {"sync", "ready"}


def test_the_ready_record_says_where_the_start_went_and_later_marks_are_ignored(tmp_path: Path) -> None:
    trace = FakeTrace()
    bot = MatrixBot(_config(tmp_path), trace, "pw")  # type: ignore[arg-type]
    bot.boot = boot.BootMarks()
    bot.boot.mark("sync")
    bot.client.rooms = dict.fromkeys({"!a:x", "!b:x"})  # type: ignore[assignment]
    bot._maybe_ready()
    bot.boot.mark("sync")  # the next sync: no longer the start's
    summary = trace.records[0]["boot"]
    assert list(summary["phases"]) == ["sync", "ready"]
    assert set(summary["beforeStart"]) == {"cpuMs", "queueMs"} and summary["beforeStart"]["cpuMs"] > 0
    assert boot.run_queue_ms() is not None  # Linux tells it


def test_the_fork_server_preloads_what_a_start_s_model_warm_up_would_import() -> None:
    """The warm-up runs beside every start's first sync: the SDK parts it loads lazily (openai's models resource,
    anyio's asyncio backend, the executor for the address lookup) cost each forked bot ~40 ms of CPU when the
    fork server does not import them once for all (a fresh interpreter, since this one has imported them)."""
    script = textwrap.dedent("""
        import asyncio, sys
        from qa.harness.botfile import builtin_bot_file
        from qa.harness.zygote import preload
        preload(builtin_bot_file().fork_server.preload)
        before = set(sys.modules)
        from qa.agent.config import ModelConfig
        from qa.agent.model import ModelClient
        async def warm():
            client = ModelClient(ModelConfig(baseUrl="http://127.0.0.1:9/v1", model="m"), "k")
            await client.warm_up()  # refused: the SDK's request path runs all the same
            await client.close()
        asyncio.run(warm())
        print(sorted(set(sys.modules) - before))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "[]", out.stdout


async def test_the_model_warm_up_sends_what_models_list_sends_and_builds_no_page_type() -> None:
    import openai
    from openai.pagination import AsyncPage

    from qa.agent.config import ModelConfig
    from qa.agent.model import ModelClient
    from qa.agent.tls import sdk_http_library

    http = sdk_http_library()
    requests: list[Any] = []

    def answer(request: Any) -> Any:
        requests.append(request)
        return http.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model", "created": 0,
                                                                    "owned_by": "x"}]})

    def sdk_client() -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key="k", base_url="http://sdk.invalid/v1", max_retries=0,
                                  http_client=http.AsyncClient(transport=http.MockTransport(answer)))

    built: list[Any] = []
    real = AsyncPage.__class_getitem__

    def spy(item: Any) -> Any:  # the pydantic generic the SDK's list() builds for its answer
        built.append(item)
        return real(item)

    model = ModelClient(ModelConfig(baseUrl="http://sdk.invalid/v1", model="m"), "k")
    model._client = sdk_client()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AsyncPage, "__class_getitem__", spy)
        assert await model.warm_up() is None
        assert built == []
        async with sdk_client() as reference:
            await reference.models.list()
        assert built, "the spy sees the SDK's page type being built"
    await model.close()
    ours, sdk = requests
    assert (ours.method, str(ours.url), ours.content) == (sdk.method, str(sdk.url), sdk.content) == \
        ("GET", "http://sdk.invalid/v1/models", b"")
    skip = {"x-stainless-retry-count", "x-stainless-read-timeout"}  # per-request bookkeeping
    assert {k: v for k, v in ours.headers.items() if k not in skip} == \
        {k: v for k, v in sdk.headers.items() if k not in skip}
    assert ours.headers["authorization"] == "Bearer k"


def test_the_run_queue_is_the_second_schedstat_field_in_ms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "schedstat"
    stat.write_text("123456789 4567000000 42\n")  # ns on a core, ns waiting for one, timeslices
    monkeypatch.setattr(boot, "_SCHEDSTAT", str(stat))
    assert boot.run_queue_ms() == 4567.0
    stat.write_text("garbage\n")
    assert boot.run_queue_ms() is None
    monkeypatch.setattr(boot, "_SCHEDSTAT", str(tmp_path / "missing"))
    assert boot.run_queue_ms() is None


def test_the_summary_is_exact_from_the_clocks_and_closes_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    walls = iter([1000.0, 1012.3456, 1030.0])
    cpus = iter([0.0071234, 0.0101234, 0.0111234])  # seconds, as time.process_time gives them
    queues = iter([None, 3.14159, 4.0])  # the kernel said nothing at the first mark
    monkeypatch.setattr(boot, "mono_ms", lambda: next(walls))
    monkeypatch.setattr(boot.time, "process_time", lambda: next(cpus))
    monkeypatch.setattr(boot, "run_queue_ms", lambda: next(queues))
    marks = boot.BootMarks()
    marks.mark("sync")
    summary = marks.summary()
    assert summary == {
        "beforeStart": {"cpuMs": 7.12, "queueMs": 0.0},
        "phases": {"sync": {"wallMs": 12.35, "cpuMs": 3.0, "queueMs": 0.0, "ioMs": 9.35},
                   "ready": {"wallMs": 17.65, "cpuMs": 1.0, "queueMs": 0.86, "ioMs": 15.8}}}
    marks.mark("sync")  # after ready: not the start's any more
    assert len(marks._marks) == 3 and marks.done is True


class UploadingClient:
    """A batch with an invite to join. Records the order of the requests (and of the trace's records) in calls.
    The upload takes more event-loop steps than the join (or waits for `release` when one is given)."""

    def __init__(self, trace: FakeTrace | None = None) -> None:
        self.calls: list[str] = []
        self.olm = object()
        self.shared = False
        self.top_up = False  # keys shared long ago, but the one-time keys run low
        self.refuse = False  # the server answers the upload with an error (429/5xx): the keys stay unshared
        self.join_error: Exception | None = None
        self.join_failed = asyncio.Event()
        self.release: asyncio.Event | None = None
        self.rooms: dict[str, Any] = {}
        self.device_id = "NEW"
        self.syncs = 0
        if trace is not None:
            emit = trace.emit

            def recorded(kind: str, **fields: Any) -> None:
                self.calls.append(f"trace:{kind}")
                emit(kind, **fields)
            trace.emit = recorded  # type: ignore[method-assign]

    @property
    def should_upload_keys(self) -> bool:
        return not self.shared or self.top_up

    should_query_keys = should_claim_keys = False

    async def sync(self, **_: Any) -> Any:
        self.syncs += 1
        if self.syncs > 1:
            raise _Stop
        invite = SimpleNamespace(invite_state=[SimpleNamespace(state_key="@bot:x", membership="invite",
                                                               sender="@d:x", content={})])
        return SimpleNamespace(next_batch="s1", account_data_events=[], to_device_events=[],
                               rooms=SimpleNamespace(invite={"!a:x": invite}, join={}, leave={}))

    async def join(self, room_id: str) -> Any:
        self.calls.append("join")
        for _ in range(3):  # a round trip: the loop runs other tasks meanwhile
            await asyncio.sleep(0)
        if self.join_error is not None:
            self.join_failed.set()
            raise self.join_error
        self.calls.append("joined")
        return object()

    async def keys_upload(self) -> Any:
        self.calls.append("upload")
        if self.release is not None:
            await self.release.wait()
        else:
            for _ in range(10):  # a longer round trip than the join's: the join comes back first
                await asyncio.sleep(0)
        self.calls.append("uploaded")
        if self.refuse:
            return KeysUploadError("too many requests", "M_LIMIT_EXCEEDED")
        self.shared, self.top_up = True, False  # as nio: the keys count as published only once the response is in
        return object()

    async def send_to_device_messages(self) -> list[Any]:
        return []


class _Stop(Exception):
    pass


class _JoinFailed(Exception):
    pass


def _uploads_running() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "keys-upload" and not task.done()]


async def test_a_new_device_uploads_its_keys_beside_the_joins_and_is_ready_once_both_are_back(
        tmp_path: Path) -> None:
    trace = FakeTrace()
    client = UploadingClient(trace)
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), trace, "pw")  # type: ignore[arg-type]
    bot.client = client  # type: ignore[assignment]
    with pytest.raises(_Stop):
        await bot.run()
    # Before: join, joined, upload (the upload waited for the join's round trip). One upload either way, and
    # `ready` only once it came back (the upload outlasts the join here, so `ready` must wait for it).
    assert client.calls == ["upload", "join", "joined", "trace:invite", "uploaded", "trace:ready"], client.calls
    assert [r["type"] for r in trace.records] == ["invite", "ready"]


async def test_a_refused_upload_is_not_sent_again_in_the_same_batch(tmp_path: Path) -> None:
    client = UploadingClient()
    client.refuse = True  # keys still unshared after it: should_upload_keys stays true
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    bot.client = client  # type: ignore[assignment]
    with pytest.raises(_Stop):
        await bot.run()
    assert client.calls.count("upload") == 1, client.calls  # the next batch's upkeep tries again, as before


async def test_an_existing_device_s_key_top_up_in_a_batch_with_invites_also_goes_beside_the_joins(
        tmp_path: Path) -> None:
    """Not only a new device's first upload: whatever upload is due (here one-time keys running low on a device
    that shared its keys long ago) leaves with the joins, once, as the docs say."""
    client = UploadingClient()
    client.device_id, client.shared, client.top_up = "OLD", True, True
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    bot.client = client  # type: ignore[assignment]
    with pytest.raises(_Stop):
        await bot.run()
    assert client.calls == ["upload", "join", "joined", "uploaded"], client.calls


async def test_a_failed_join_lets_the_upload_in_flight_come_back_before_the_error_goes_on(tmp_path: Path) -> None:
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    client = UploadingClient()
    client.join_error, client.release = _JoinFailed(), asyncio.Event()
    batch = asyncio.create_task(join_beside_key_upload(client, bot.membership, {"!a:x": SimpleNamespace()},
                                                       bot._config))
    await asyncio.wait_for(client.join_failed.wait(), 5)
    await asyncio.sleep(0)  # the batch's error handling runs
    assert len(_uploads_running()) == 1, "a failed join cancelled an upload the server may already hold"
    client.release.set()
    with pytest.raises(_JoinFailed):
        await asyncio.wait_for(batch, 5)
    assert client.calls[-1] == "uploaded" and client.shared
    assert not _uploads_running()


async def test_a_failed_join_waits_for_the_upload_only_so_long(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matrix, "UPLOAD_SETTLE_S", 0.01)
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    client = UploadingClient()
    client.join_error, client.release = _JoinFailed(), asyncio.Event()  # never released: the upload hangs
    with pytest.raises(_JoinFailed):
        await asyncio.wait_for(join_beside_key_upload(client, bot.membership, {"!a:x": SimpleNamespace()},
                                                      bot._config), 5)
    assert "uploaded" not in client.calls and not _uploads_running()


async def test_a_stop_during_the_joins_cancels_the_upload_at_once(tmp_path: Path) -> None:
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    client = UploadingClient()
    client.release = asyncio.Event()  # never released
    joined = asyncio.Event()
    join = client.join

    async def held_join(room_id: str) -> Any:
        client.calls.append("join")
        joined.set()
        await asyncio.Event().wait()  # the join is in flight when the bot stops
        return await join(room_id)
    client.join = held_join  # type: ignore[method-assign]
    batch = asyncio.create_task(join_beside_key_upload(client, bot.membership, {"!a:x": SimpleNamespace()},
                                                       bot._config))
    await asyncio.wait_for(joined.wait(), 5)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(batch, 5)
    assert "uploaded" not in client.calls and not _uploads_running()


async def test_a_device_whose_keys_are_shared_uploads_nothing_beside_the_joins(tmp_path: Path) -> None:
    bot = MatrixBot(_config(tmp_path, rooms={"!a:x": {}}), FakeTrace(), "pw")  # type: ignore[arg-type]
    client = UploadingClient()
    client.shared = True
    bot.client = client  # type: ignore[assignment]
    with pytest.raises(_Stop):
        await bot.run()
    assert client.calls == ["join", "joined"]
