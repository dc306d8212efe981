"""The `matrix_qa` fixture's object: one test is one scenario, its steps called one at a time as methods.

`setup(...)` takes a scenario file's header fields and starts the scenario (its users, rooms and bot) through the
same runner as `matrix-qa run` (qa.scenario.runner.run_scenario, fed step by step); each step kind of the
registry is a method of the same name whose keyword arguments are the step's YAML fields (`as` spelled `as_`,
`from` spelled `from_`: Python keywords).
Every call is validated as the scenario file would be: the header and the steps so far, with the same messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from qa.pytest_plugin.failure import MatrixQAFailure, MatrixQAUsageError, failure_text
from qa.scenario.loader import describe_error, field_path
from qa.scenario.schema import Scenario
from qa.scenario.steps.registry import STEP_TYPES, Step

PYTHON_PROFILE = "python"


class TestScenario(Scenario):
    """A scenario whose steps arrive one at a time: none yet is fine."""

    __test__ = False  # not a pytest test class, whatever its name
    steps: list[Step] = Field(default_factory=list)  # type: ignore[assignment]


class Skip(Exception):  # a skip, not an error: becomes pytest.skip in the test's thread
    """The bot lacks what the test needs: the CLI's reason."""


@dataclass
class Event:
    """A room event a step observed (a reply, a message a test user sent), as the test users' client saw it."""

    event_id: str
    room_id: str
    sender: str
    body: str | None
    content: dict[str, Any]
    relates_to: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)


class _Watched:
    """A step as the runner sees it, telling the test when it passed (and with what the scenario knows)."""

    def __init__(self, step: Any, done: asyncio.Future[Any]) -> None:
        self.step = step
        self.kind = step.kind
        self.owns_bot_start = step.owns_bot_start
        self._done = done

    async def run(self, ctx: Any) -> str:
        detail = await self.step.run(ctx)
        if not self._done.done():
            self._done.set_result((ctx, detail))
        return str(detail)


class MatrixQA:
    """One test's scenario. Made by the `matrix_qa` fixture; every coroutine method runs on the session's loop."""

    def __init__(self, session: Any, scenario_id: str, title: str, bot_file: Any = None) -> None:
        self._session = session
        self.scenario_id = scenario_id
        self._title = title
        self._bot_file = bot_file  # a per-test bot file (the matrix_qa marker), else the session's
        self._header: dict[str, Any] | None = None
        self._raw_steps: list[dict[str, Any]] = []
        self.scenario: TestScenario | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._ready: asyncio.Future[None] | None = None  # set when the runner asks for the first step
        self._res: Any = None
        self.ctx: Any = None
        self.result: Any = None  # the scenario's record, once it has ended

    # --- the documented API -----------------------------------------------------------------------------------

    async def setup(self, **header: Any) -> None:
        """The scenario header (rooms, actors, bot, requires, timeout, faults, live, title, profiles), checked
        as a scenario file's, then the users, rooms and bot started. Called by the first step when not before."""
        __tracebackhide__ = True
        await self._call(self._setup(header))

    def marker(self, name: str) -> str:
        """This test's value of a marker (`token`, `token2` … `token9`), as `{token}` expands to in a step."""
        return str(self._markers()[name])

    def room_id(self, name: str = "main") -> str:
        return str(self._started().rooms[name])

    def user_id(self, name: str) -> str:
        return str(self._started().user_id_of(name))

    @property
    def evidence(self) -> dict[str, Any]:
        """What the scenario has recorded so far: its negative checks, the mock's journal (None on a live model),
        the bot's trace records and the room events the test users saw; once ended, its record (`result`)."""
        ctx = self.ctx
        return {
            "result": self.result,
            "negative_checks": list(ctx.negative_checks) if ctx else [],
            "journal": list(ctx.provider.journal) if ctx and ctx.provider is not None else None,
            "trace": list(ctx.bot.trace.items[ctx.trace_start:]) if ctx else [],
            "events": list(ctx.observer().events.items) if ctx else [],
        }

    # --- on the session's loop --------------------------------------------------------------------------------

    async def _call(self, coro: Any) -> Any:
        __tracebackhide__ = True  # pytest shows the test's line and the failure, not the plugin's frames
        try:
            return await self._session.on_loop(coro)
        except Skip as exc:
            import pytest

            pytest.skip(str(exc))

    def _markers(self) -> Any:
        return self._session.base.markers.child(self.scenario_id)

    def _started(self) -> Any:
        if self.ctx is None:
            raise MatrixQAUsageError("the scenario has not started: call setup() or a step first")
        return self.ctx

    async def _setup(self, header: dict[str, Any]) -> None:
        __tracebackhide__ = True
        if self._header is not None:
            raise MatrixQAUsageError("setup() is called once, before the first step")
        raw = {"title": self._title, "profiles": [PYTHON_PROFILE], **header}
        for reserved in ("id", "steps"):
            if reserved in raw:
                raise MatrixQAUsageError(f"setup(): `{reserved}` is not a setup field (the test names the scenario, "
                                         "its steps are the method calls)")
        if "provider" in raw:  # the session's mock has started with its rules; a test's would reach every test
            raise MatrixQAUsageError("setup(): `provider` rules are not supported in a test; put the rule file in "
                                     "a scenario file, or start the session with it")
        scenario = _validated({**raw, "id": self.scenario_id}, "setup()")
        self._header = raw
        self.scenario = scenario
        from qa.scenario.runner import run_scenario

        res = self._session.resources_for(scenario)
        if self._bot_file is not None:
            from dataclasses import replace

            res = replace(res, bot_file=self._bot_file, fork_server=None)
        self._res = res
        self._check_needs("setup()")
        self._queue = asyncio.Queue()
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(run_scenario(scenario, res, self._session.say_for(self.scenario_id),
                                                        steps=self._feed()))
        await asyncio.wait({self._ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.done():  # the scenario ended before its first step: provisioning or the bot failed
            raise self._failure(await self._ended())

    async def _feed(self) -> Any:
        assert self._queue is not None and self._ready is not None
        if not self._ready.done():
            self._ready.set_result(None)
        while (item := await self._queue.get()) is not None:
            yield item

    async def step(self, kind: str, fields: dict[str, Any]) -> Any:
        """Run one step of `kind` with its YAML fields; what it observed, or MatrixQAFailure."""
        __tracebackhide__ = True
        if self._header is None:
            await self._setup({})
        assert self.scenario is not None and self._task is not None and self._queue is not None
        if self._task.done():
            raise MatrixQAUsageError("the scenario has already ended (an earlier step failed)")
        raw = {_KEYWORDS.get(k, k): v for k, v in fields.items()}
        step_class = STEP_TYPES[kind]
        if step_class.defines_kind and raw.get("id") is None and "id" in step_class.model_fields:
            raw["id"] = f"{kind.replace('_', '-')}-{len(self._raw_steps) + 1}"  # to hand back what it names
        raw_steps = [*self._raw_steps, {kind: raw}]
        checked = _validated({**(self._header or {}), "id": self.scenario_id, "steps": raw_steps}, f"{kind}()")
        new = checked.steps[-1]
        self._raw_steps = raw_steps
        self.scenario.steps.append(new)
        self._check_needs(f"{kind}()")
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(_Watched(new, done))
        await asyncio.wait({done, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise self._failure(await self._ended())
        self.ctx, detail = done.result()
        return self._observed(new, detail)

    def _check_needs(self, where: str) -> None:
        from qa.harness.capabilities import missing, skip_reason

        assert self.scenario is not None
        bot = self._res.bot_file
        have = bot.abilities()
        reason = skip_reason(bot.name, missing(self.scenario, have, bot.state_mutations, bot.accounts,
                                                   bot.registration is not None))
        if self._res.provider is None and self.scenario.live.skip:
            reason = f"skipped on a live model: {self.scenario.live.tolerance or 'the test needs the mock provider'}"
        if reason:
            raise Skip(reason)

    def _observed(self, step: Any, detail: str) -> Any:
        sid = step.defined_id()
        ref = self.ctx.refs.get(sid) if sid else None
        if ref is None:
            return detail
        raw = next((e for e in reversed(self.ctx.observer().events.items) if e.get("event_id") == ref.event_id), None)
        if raw is None:  # what a test user sent, before its own sync has shown it
            return Event(ref.event_id, ref.room_id, self.ctx.user_id_of(ref.actor) if ref.actor else "", ref.body,
                         {}, None, {})
        content = dict(raw.get("content") or {})
        return Event(str(raw.get("event_id")), str(raw.get("room_id")), str(raw.get("sender")), content.get("body"),
                     content, content.get("m.relates_to"), raw)

    async def _ended(self) -> Any:
        """The scenario's record, once its runner has finished (its own teardown included), filed once."""
        assert self._task is not None
        if self.result is None and self._task.cancelled():  # Ctrl-C: the runner filed it among the interrupted
            self.result = self._res.interrupted[-1] if self._res.interrupted else None
        if self.result is None:
            result = await self._task
            self.result = self._session.file_result(result)
        return self.result

    def _failure(self, result: Any) -> Exception:
        if result.status == "skip":
            return Skip(result.details)
        return MatrixQAFailure(failure_text(result), result)

    async def finish(self) -> None:
        """End the scenario as the runner ends one (what the steps checked still holds, the bot stopped, its
        leftovers killed, the lock evidence judged); MatrixQAFailure when that fails. Nothing when never set up."""
        if self._task is None:
            return
        if not self._task.done():
            assert self._queue is not None
            await self._queue.put(None)
        from qa.scenario.runner import CONFIG_ERROR  # the runner is heavy; the plugin loads without it

        result = await self._ended()
        if result is not None and (result.status not in ("pass", "skip", "interrupted")
                                   or result.details.startswith(CONFIG_ERROR)):  # cut short, yet the test's fault
            raise self._failure(result)

    async def abandon(self, exc: BaseException) -> None:
        """The test itself failed, skipped or was cut short: end the scenario all the same, and file it so."""
        if self._task is None:
            return
        if isinstance(exc, KeyboardInterrupt) and not self._task.done():
            # Cut short where it is (a step may be waiting): the runner records it as interrupted, in the run's
            # list of those (qa.run.scheduler.settle files it), after its own bounded teardown.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._ended()
            return
        if not self._task.done():
            assert self._queue is not None
            await self._queue.put(None)
        result = await self._ended()
        if result is None or result.status != "pass":
            return
        import pytest

        if isinstance(exc, pytest.skip.Exception):
            result.status, result.details = "skip", str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            result.status, result.details = "interrupted", "interrupted: SIGINT received"
        else:
            result.status, result.details = "fail", f"the test failed: {type(exc).__name__}: {exc}"


def _validated(raw: dict[str, Any], where: str) -> TestScenario:
    __tracebackhide__ = True
    try:
        return TestScenario.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{field_path(tuple(e['loc']))}: {describe_error(e)}" for e in exc.errors(include_url=False)]
        raise MatrixQAUsageError(f"{where}: " + "; ".join(problems)) from None


# YAML field names that are Python keywords, spelled with a trailing underscore as keyword arguments.
_KEYWORDS = {"as_": "as", "from_": "from"}


def _step_method(kind: str, cls: type[BaseModel]) -> Any:
    async def method(self: MatrixQA, **fields: Any) -> Any:
        __tracebackhide__ = True
        return await self._call(self.step(kind, fields))

    params = []
    for name, info in cls.model_fields.items():
        keyword = info.alias or name
        keyword = f"{keyword}_" if keyword in _KEYWORDS.values() else keyword
        default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        params.append(inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY, default=default))
    method.__name__ = method.__qualname__ = kind
    method.__doc__ = re.sub(r"\s+", " ", f"Step `{kind}`: {getattr(cls, 'does', '')}")
    method.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])
    return method


for _kind, _cls in STEP_TYPES.items():
    setattr(MatrixQA, _kind, _step_method(_kind, _cls))
