"""Steps that act on the bot's process, its saved state and its config, or on the homeserver: restart_bot,
stop_bot, start_bot, mutate_bot_state, set_bot_config, restart_homeserver."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from qa.harness.bot_process import describe_record
from qa.scenario.context import StepFailed
from qa.scenario.fields import Duration, MarkedText, RoomName, error
from qa.scenario.settings import RoomOverride
from qa.scenario.steps.base import Problem, Scan, StepBase
from qa.scenario.steps.common import text
from qa.waiting import WaitTimeout

if TYPE_CHECKING:
    from qa.scenario.context import ScenarioContext

Mode = Literal["graceful", "kill"]  # kill: SIGKILL, no chance to clean up


async def _start(ctx: ScenarioContext, timeout_s: float) -> None:
    start = await ctx.bot.start()
    await ctx.bot.wait_ready(min(timeout_s, ctx.bot.bot.ready.timeout), start)


class RestartBot(StepBase):
    """Restart the bot process and wait until it is syncing again."""

    kind: ClassVar[str] = "restart_bot"
    does: ClassVar[str] = "restart the bot (`mode: graceful` or `kill`) and wait until it is ready again"
    capabilities: ClassVar[tuple[str, ...]] = ("restart",)
    starts_bot: ClassVar[bool] = True
    owns_bot_start: ClassVar[bool] = True

    mode: Mode = "graceful"

    async def run(self, ctx: ScenarioContext) -> str:
        code = await (ctx.bot.kill() if self.mode == "kill" else ctx.bot.stop())
        await _start(ctx, self.wait_s(ctx))
        return f"bot {self.mode} restart (exit {code}), ready again"


class StopBot(StepBase):
    """Stop the bot (gracefully or with SIGKILL) and leave it down: messages sent now wait for `start_bot`."""

    kind: ClassVar[str] = "stop_bot"
    does: ClassVar[str] = "stop the bot (`mode: graceful` or `kill`) and leave it down"
    capabilities: ClassVar[tuple[str, ...]] = ("restart",)
    stops_bot: ClassVar[bool] = True

    mode: Mode = "graceful"

    async def run(self, ctx: ScenarioContext) -> str:
        code = await (ctx.bot.kill() if self.mode == "kill" else ctx.bot.stop())
        return f"bot stopped ({self.mode}, exit {code})"


class StartBot(StepBase):
    """Start a stopped bot again and wait until it is syncing with its rooms joined."""

    kind: ClassVar[str] = "start_bot"
    does: ClassVar[str] = "start a stopped bot and wait until it is ready"
    capabilities: ClassVar[tuple[str, ...]] = ("restart",)
    starts_bot: ClassVar[bool] = True
    owns_bot_start: ClassVar[bool] = True

    timeout: Duration | None = None

    async def run(self, ctx: ScenarioContext) -> str:
        await _start(ctx, self.wait_s(ctx))
        return "bot started and ready"


class MutateBotState(StepBase):
    """Run one of the bot file's named `state_mutations` while the bot is stopped (between `stop_bot` and
    `start_bot`): a stale sync position, a lock file left by a dead process, a damaged store. The command gets
    the bot's launch environment and placeholders; `args` are appended to its argv (markers expanded)."""

    kind: ClassVar[str] = "mutate_bot_state"
    does: ClassVar[str] = (
        "between `stop_bot` and `start_bot`: run the bot file's named `state_mutations` command (`mutation`, extra "
        "`args`) with the bot's launch environment and placeholders; its output goes to `bot-mutations.log`. A bot "
        "file without that mutation skips the scenario with the reason")
    capabilities: ClassVar[tuple[str, ...]] = ("restart",)

    mutation: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
    args: list[MarkedText] = Field(default_factory=list)
    timeout: Duration | None = None

    def state_mutations(self) -> list[str]:
        return [self.mutation]

    def check(self, scan: Scan) -> Iterator[Problem]:
        if not scan.bot_down:
            # A running bot may rewrite its own state at any moment, so a change made under it proves nothing.
            yield ("mutation",), "the bot must be stopped first: put a stop_bot step before it", self.mutation

    async def run(self, ctx: ScenarioContext) -> str:
        from qa.harness.state_mutation import run_state_mutation

        args = [text(ctx, a) for a in self.args]
        result = await run_state_mutation(ctx.bot, self.mutation, args, self.wait_s(ctx),
                                          ctx.artifact_dir / "bot-mutations.log", ctx.bot.secrets)
        if not result.ok:
            how = "did not finish in time" if result.code is None else f"exited with code {result.code}"
            raise StepFailed(f"state mutation {self.mutation!r} succeeds", [f"{self.mutation} {how}", *result.tail],
                             hints=["its whole output is in bot-mutations.log"])
        return f"state mutation {self.mutation} done" + (f": {result.tail[-1]}" if result.tail else "")


class SetBotConfig(StepBase):
    """Change the running bot's settings: the harness renders its config again with these changes and a new
    generation, writes it over the old one and sends SIGHUP; the step passes when the bot traces
    `config.reload` with that generation (capability `hot-reload`)."""

    kind: ClassVar[str] = "set_bot_config"
    does: ClassVar[str] = (
        "`bot: {...}` and/or `rooms: {name: {...}}` (as in the room settings): the bot's config is rendered again "
        "with the change and the next `config_generation`, replaces the old file, and the bot gets SIGHUP; passes "
        "when it traces `config.reload` with that generation and `ok: true`")
    capabilities: ClassVar[tuple[str, ...]] = ("hot-reload", "policy")

    bot: RoomOverride = Field(default_factory=RoomOverride)  # account-level changes
    rooms: dict[RoomName, RoomOverride] = Field(default_factory=dict)  # per-room changes
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> SetBotConfig:
        if not self.bot.model_fields_set and not any(r.model_fields_set for r in self.rooms.values()):
            raise error("evidence", "set_bot_config changes nothing: give `bot: {...}` and/or `rooms: {...}`")
        return self

    def check(self, scan: Scan) -> Iterator[Problem]:
        changes = [(("bot",), self.bot), *((("rooms", name), o) for name, o in self.rooms.items())]
        for loc, override in changes:
            if loc[0] == "rooms" and loc[1] not in scan.rooms:
                yield loc, scan.unknown_room(loc[1]), loc[1]
            for j, name in enumerate(override.allowlist or []):
                if name not in scan.actors:
                    yield (*loc, "allowlist", j), scan.unknown_actor(name), name

    async def run(self, ctx: ScenarioContext) -> str:
        """Render the bot's config again with this change, write it where the bot reads it, send SIGHUP, and
        wait for the bot to trace the new generation (without a trace, only the signal's delivery is known)."""
        launch = ctx.bot.launch
        new_text = ctx.rerender([*ctx.config_changes, self]) if ctx.rerender else None
        if new_text is None or launch.config_path is None or ctx.bot.pid is None:
            raise StepFailed("a running bot with a rendered config to change",
                             [f"bot {ctx.bot.name}: config {launch.config_path}, pid {ctx.bot.pid}"])
        ctx.config_changes.append(self)
        generation = len(ctx.config_changes) + 1
        launch.config_text = new_text  # a later restart starts from the changed config too
        tmp = launch.config_path.with_suffix(".next")
        tmp.write_text(new_text, encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(launch.config_path)  # whole or not at all: a bot never reads half a config
        mark = len(ctx.bot.trace.items)
        os.kill(ctx.bot.pid, signal.SIGHUP)
        if not ctx.bot.has_trace:
            ctx.method = "signal"
            return f"config generation {generation} written, SIGHUP sent (NOT CHECKED: the bot writes no trace)"
        ctx.method = "trace"
        try:
            record = await ctx.bot.trace.wait_for(lambda r: r.get("type") == "config.reload"
                                                  and r.get("generation") == generation, self.wait_s(ctx),
                                                  f"config.reload generation {generation}", mark)
        except WaitTimeout as exc:
            raise StepFailed(f"the bot reloads its config (trace config.reload with generation {generation})",
                             exc.seen[-10:]) from None
        if record.get("ok") is not True:
            raise StepFailed(f"the bot applies config generation {generation}",
                             ["bot trace: " + describe_record(record)])
        return describe_record(record)


class RestartHomeserver(StepBase):
    kind: ClassVar[str] = "restart_homeserver"
    does: ClassVar[str] = (
        "restart the homeserver and wait until it is ready again; the scenario runs alone, never beside another")
    # Every other scenario's sync would be interrupted: a scenario with this step runs alone, even under --jobs.
    runs_alone: ClassVar[bool] = True

    async def run(self, ctx: ScenarioContext) -> str:
        await ctx.homeserver.restart()
        return f"homeserver restarted ({ctx.homeserver.boot_ms:.0f} ms)"
