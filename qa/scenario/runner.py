"""Run one scenario: provision its own users, rooms and bot process, execute its steps, tear it all down.

Everything a scenario creates carries a per-run suffix, so scenarios never share state and can later run side
by side on one homeserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import traceback
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.actors import SETUP_SYNC_FILTER, Actor, login_for_token
from qa.harness.bot_process import BotUnderTest
from qa.harness.botfile import USER_REGISTRATION_TOKEN, BotFile, builtin_bot_file
from qa.harness.capabilities import missing, skip_reason
from qa.harness.launch import EXEC_DIR_NAME, LaunchFacts, build_launch
from qa.harness.peer import needs_peer_reason
from qa.harness.probe import Prober, start_prober, stop_prober
from qa.homeserver.base import Homeserver
from qa.kernel.clock import mono_ms
from qa.kernel.errors import ConfigError, HomeserverError, QAError
from qa.provider.placeholders import run_localpart_suffix
from qa.report.observed_events import ObservedEvents
from qa.report.summary import Failure, ScenarioResult, StepResult
from qa.scenario.appservice_bot import lease_appservice
from qa.scenario.artifacts import collect_artifacts, invalid_transcript_lines
from qa.scenario.bot_death import recent_evidence, until_bot_dies
from qa.scenario.context import ScenarioContext, StepFailed
from qa.scenario.faults_served import file_fault_hits, start_fault_proxy, uses_fault_proxy
from qa.scenario.fence import judge_after_exit
from qa.scenario.loader import located
from qa.scenario.peer import (
    ROLE,
    peer_launch,
    peer_ready,
    peer_roles,
    stop_peer,
)
from qa.scenario.settings import bot_settings, uses_encryption
from qa.scenario.settling import late_evidence_in, settle

KEYS_TIMEOUT_S = 30.0
INTERRUPT_STOP_S = 2.0
CONFIG_ERROR = "configuration error"  # how a scenario cut short by one says so (qa.pytest_plugin reads it)


@dataclass
class RunResources:
    """What every scenario of a run shares: the homeserver, the model endpoint, the bot file and where files go."""

    homeserver: Homeserver
    provider: Any | None
    model_base_url: str
    model_name: str
    run_id: str
    artifact_dir: Path
    state_dir: Path
    markers: Any
    bot_env: dict[str, str]
    bot_overrides: dict[str, Any]
    secrets: list[str]
    probes: list[dict[str, Any]]
    observed: ObservedEvents
    bot_file: BotFile = field(default_factory=builtin_bot_file)
    provider_api_key: str = "mock-key"
    provider_timeout_s: float | None = None
    provider_max_retries: int | None = None
    # A scenario cut short by the run's end (a signal, a dead homeserver) files its partial result here, and
    # `stop_reason` says why.
    interrupted: list[ScenarioResult] = field(default_factory=list)
    stop_reason: Any = None
    infra_errors: list[str] = field(default_factory=list)
    # Configuration errors found while a scenario ran: the run's errors (exit 2), shared by every scenario.
    config_errors: list[str] = field(default_factory=list)
    # --include-bodies: decrypted bodies may reach the artifacts (transcripts of encrypted scenarios).
    include_bodies: bool = False
    reply_edit_wait_s: float | None = None  # --reply-edit-wait (qa.scenario.context.ScenarioContext)
    step_timeout_cap_s: float | None = None  # --step-timeout-cap (qa.scenario.steps.base.StepBase.wait_s)
    fork_server: Any | None = None  # qa.harness.fork_server.ForkServer, when the run has one
    peer_bot: BotFile | None = None  # --peer-bot (qa.harness.peer): for the scenarios that name a peer


def _stopping(res: RunResources) -> bool:
    """A run that is being stopped (a signal) gives each bot a short grace, not its full stop timeout."""
    return callable(res.stop_reason) and res.stop_reason() is not None


def _localpart(role: str, scenario_id: str, run_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", scenario_id.lower()).strip("-")[:40]
    return f"mqa-{role}-{slug}-{run_localpart_suffix(run_id)}"  # the suffix a cassette templates as {run}


async def run_scenario(scenario: Any, res: RunResources, say: Any,
                       steps: AsyncIterable[Any] | None = None) -> ScenarioResult:
    """Run one scenario. `steps`, when given, feeds the steps one at a time instead of `scenario.steps` (a
    pytest test calls them one by one: qa.pytest_plugin); the scenario then ends when the feed does."""
    live = res.provider is None  # a live model: no journal, not deterministic
    reason = None
    if live and scenario.live.skip:
        reason = f"skipped on a live model: {scenario.live.tolerance or 'the scenario needs the mock provider'}"
    else:
        reason = skip_reason(res.bot_file.name, missing(scenario, res.bot_file.abilities(),
                                                          res.bot_file.state_mutations, res.bot_file.accounts,
                                                          res.bot_file.registration is not None)) \
            or needs_peer_reason(scenario.peer_bot, res.peer_bot is not None)
    if reason:
        say(f"  - {scenario.id} {reason}")
        return ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=reason)
    result = await _run_scenario(scenario, res, say, _listed(scenario.steps) if steps is None else steps)
    if live and scenario.live.tolerance:
        result.details = f"{result.details} (live tolerance: {scenario.live.tolerance})"
    return result


async def _listed(steps: list[Any]) -> AsyncIterator[Any]:
    for step in steps:
        yield step


async def _run_scenario(scenario: Any, res: RunResources, say: Any, steps: AsyncIterable[Any]) -> ScenarioResult:
    started = mono_ms()
    scenario_dir = res.artifact_dir / "scenarios" / scenario.id
    scenario_dir.mkdir(parents=True, exist_ok=True)
    state_dir = res.state_dir / scenario.id
    state_dir.mkdir(parents=True, exist_ok=True)
    result = ScenarioResult(id=scenario.id, title=scenario.title, status="fail",
                            source=str(getattr(scenario, "source_path", "") or ""))
    actors: dict[str, Actor] = {}
    # Set by _provision as soon as the bot process exists, so the teardown stops it whatever happens next.
    holder: dict[str, Any] = {}  # "bot": BotUnderTest, "faults": FaultProxy
    ctx: ScenarioContext | None = None
    probes: list[dict[str, Any]] = []
    prober: Prober | None = None
    try:
        async with asyncio.timeout(float(scenario.timeout)):
            ctx = await _provision(scenario, res, actors, holder, state_dir, scenario_dir, result)
            if ctx.bot.bot.has("lock"):
                prober = await start_prober(ctx.bot, probes, res.fork_server)
            await _run_steps(ctx, steps, result, say)
            # Late evidence: an edit that changed a checked reply, an unwanted reply that came after its check.
            # What the bot sends right after the last step (an edit a few ms later) is let in first.
            unreceived = await late_evidence_in(ctx) if ctx.final_checks else None
            late = [problem for check in ctx.final_checks if (problem := check())]
            if late:
                raise StepFailed("what the steps checked still holds when the scenario ends", late)
            first_look = len(ctx.observer().events.items) if ctx.final_checks else 0
        if ctx.final_checks:
            # Then once more on the room as the bot left it (qa.scenario.fence): it is stopped now, not in the
            # teardown, and outside the scenario's timeout, as the teardown's stop always was.
            holder["stopped_at"] = mono_ms()
            await ctx.bot.stop(timeout_s=INTERRUPT_STOP_S if _stopping(res) else None)
            fenced = mono_ms()
            try:
                after = await judge_after_exit(ctx, first_look)
            finally:
                result.fenceMs = round(mono_ms() - fenced, 1)
            # What the first look missed stays said (traced sends still in flight, events no client received:
            # the fence covers only the observer's rooms, and not a send the homeserver had not yet persisted).
            unreceived = "; ".join(filter(None, [unreceived, after])) or None
        result.status = "pass"
        result.details = f"{len(result.steps)} steps passed"
        not_checked = [s for s in result.steps if "NOT CHECKED" in s.detail]
        if not_checked:
            result.details += f"; {len(not_checked)} check(s) NOT CHECKED (steps " \
                + ", ".join(str(s.index) for s in not_checked) + ")"
        if unreceived:
            result.details += f"; final checks NOT CHECKED: {unreceived}"
    except StepFailed as exc:
        failed = next((s for s in result.steps if s.status == "fail"), None)
        result.failure = Failure(step=failed.index if failed else None, stepKind=failed.kind if failed else None,
                                 expected=exc.expected, seen=exc.seen, hints=exc.hints)
        result.details = f"step {failed.index} ({failed.kind}): {exc.expected}" if failed else \
            getattr(exc, "details", None) or (f"{exc.expected}: {exc.seen[0]}" if exc.seen else exc.expected)
    except TimeoutError:
        running = result.steps[-1] if result.steps else None
        where = f"step {running.index} ({running.kind})" if running else "setup"
        seen = recent_evidence(holder.get("bot"))
        result.failure = Failure(step=running.index if running else None, stepKind=running.kind if running else None,
                                 expected=f"scenario finishes within its timeout of {float(scenario.timeout):g}s",
                                 seen=seen)
        if running:
            running.status = "fail"
        result.details = f"timed out during {where}"
    except HomeserverError as exc:
        # Not this scenario's fault, nor the bot's: the run records it as an infrastructure error (exit 2).
        result.failure = Failure(expected="the homeserver registers users and makes rooms", seen=str(exc).splitlines())
        result.details = f"infrastructure (homeserver): {str(exc).splitlines()[0]}"
        res.infra_errors.append(str(exc))
    except ConfigError as exc:
        config_error(result, exc, res.config_errors)
    except QAError as exc:
        result.failure = Failure(expected="scenario infrastructure works", seen=str(exc).splitlines())
        result.details = f"infrastructure: {str(exc).splitlines()[0]}"
    except Exception as exc:  # a harness or library bug: report it as this scenario's failure, keep the rest
        result.failure = Failure(expected="the harness runs the scenario", seen=traceback.format_exception(exc)[-8:])
        result.details = f"harness error: {type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        running = result.steps[-1] if result.steps else None
        why = (res.stop_reason() if callable(res.stop_reason) else None) or "the run was stopped"
        where = f"step {running.index} ({running.kind})" if running else "setup"
        result.status = "interrupted"
        result.details = f"interrupted during {where}: {why}"
        if running is not None and running.status == "fail":
            running.status = "interrupted"
        result.failure = Failure(step=running.index if running else None,
                                 stepKind=running.kind if running else None,
                                 expected="the scenario runs to its end", seen=[why, *recent_evidence(
                                     holder.get("bot"))])
        res.interrupted.append(result)
        raise
    finally:
        if prober is not None and (problem := await stop_prober(prober)):
            say(f"  ! {problem}")
        res.probes.extend({**p, "scenario": scenario.id} for p in probes)
        bot = holder.get("bot")
        if bot is not None:
            if bot.died.is_set() and result.status == "pass":
                # A crash after the last step is still a crash: the scenario must not pass over it.
                result.status = "fail"
                result.failure = Failure(expected="the bot keeps running until the scenario ends",
                                         seen=[f"bot {bot.name}: {bot.exit_description} (log: {bot.log_path})",
                                               *bot.log_tail()])
                result.details = f"the bot {bot.exit_description} unexpectedly"
            # A request held past this was ended by us, not by the bot (Faults served).
            stopped_at = holder.get("stopped_at") or mono_ms()
            await bot.stop(timeout_s=INTERRUPT_STOP_S if _stopping(res) else None)  # once: a second is a no-op
        peer_crash = await stop_peer(holder.get("peer"), callable(res.stop_reason) and res.stop_reason() is not None)
        if peer_crash and result.status == "pass":
            result.status, result.details = "fail", "the peer bot exited unexpectedly"
            result.failure = Failure(expected="the peer bot keeps running until the scenario ends", seen=[peer_crash])
        if holder.get("appservice") is not None:
            await holder["appservice"].release()  # after the bot: nothing is forwarded to a port now free
        # After the bot: a proxy gone first would look like a homeserver outage to a bot still running.
        await file_fault_hits(holder.get("faults"), holder.get("appservice"), ctx, scenario_dir, result, res.secrets,
                              stopped_at if bot is not None else None)
        if actors:
            # One witness per scenario is enough: every member sees the same room timeline.
            watcher = next(iter(actors.values()))
            res.observed.add(scenario.id, watcher.name, watcher.events.items)
        for actor in actors.values():
            with contextlib.suppress(Exception):
                await actor.close()
        collect_artifacts(state_dir, scenario_dir, result, res.secrets,
                          strip_bodies=uses_encryption(scenario) and not res.include_bodies)
        broken = invalid_transcript_lines(state_dir / "bot" / "sessions")
        if broken and result.status == "pass":
            # Whatever happened (crashes included), every transcript line must still parse.
            result.status = "fail"
            result.failure = Failure(expected="every line of every transcript is valid JSON", seen=broken)
            result.details = f"{len(broken)} invalid transcript line(s)"
        if ctx is not None:
            result.replyLatenciesMs = ctx.reply_latencies_ms
            result.negativeChecks = ctx.negative_checks
        result.durationMs = round(mono_ms() - started, 1)
    say(f"  {'✔' if result.status == 'pass' else '✘'} {scenario.id} {result.status} "
        f"({result.durationMs / 1000:.2f}s){'' if result.status == 'pass' else ': ' + result.details}")
    return result


async def _provision(
    scenario: Any, res: RunResources, actors: dict[str, Actor], holder: dict[str, Any],
    state_dir: Path, scenario_dir: Path, result: ScenarioResult,
) -> ScenarioContext:
    hs = res.homeserver
    # The bot's extra accounts (bot file `accounts`) are users like the others: role "bot.NAME" (an actor's name
    # has no dot, so no localpart can clash).
    roles = ["bot", *scenario.actors, *(f"bot.{name}" for name in res.bot_file.accounts), *peer_roles(scenario, res)]
    passwords = {role: secrets.token_urlsafe(18) for role in roles}
    res.secrets.extend(passwords.values())
    # All users at once, each with its session where the homeserver makes one while registering (Synapse):
    # the actors' devices are the ones a login would have made, and the bot's is the ready session the launch
    # contract hands it (MATRIX_QA_ACCESS_TOKEN), for bots that do not log in.
    devices = {role: "matrix-qa launch" if role.split(".")[0] == "bot" else f"matrix-qa {role}" for role in roles}
    # An application-service bot's main user is made by the service in its own namespace (appservice_bot).
    as_bot = holder["appservice"] = await lease_appservice(hs, res.bot_file, state_dir, res.secrets, scenario.faults)
    made = [role for role in roles if not (as_bot and role == "bot")]
    registered = await asyncio.gather(*(
        hs.register_session(_localpart(role, scenario.id, res.run_id), passwords[role], device_name=devices[role])
        for role in made))
    creds = dict(zip(made, registered, strict=True))
    if as_bot:
        creds["bot"] = as_bot.credentials()
        passwords["bot"] = ""  # it has none: it speaks by its session or by the as_token
    res.secrets.extend(c.access_token for c in registered if c.access_token)
    encryption = uses_encryption(scenario)
    for name in scenario.actors:
        # Crypto stores hold private keys, so they live in the state dir, never in the artifacts.
        actors[name] = Actor(name, hs.base_url, creds[name].user_id, passwords[name], state_dir / "actors" / name,
                             encryption=encryption)
    bot_user_id = creds["bot"].user_id
    logins = []
    for name, actor in actors.items():
        session_token, session_device = creds[name].access_token, creds[name].device_id
        if session_token and session_device:
            actor.adopt_session(session_token, session_device)
        else:
            logins.append(actor.login())
    bot_session = creds["bot"]
    if bot_session.access_token and bot_session.device_id:
        token, device_id = bot_session.access_token, bot_session.device_id
        await asyncio.gather(*logins)
    else:
        (token, device_id), *_ = await asyncio.gather(login_for_token(hs.base_url, bot_user_id, passwords["bot"]),
                                                      *logins)
        res.secrets.append(token)
    accounts = await _extra_accounts(res, creds, passwords)
    also_bot = [a["user_id"] for a in accounts.values()]
    peer_ids = [creds[ROLE].user_id] if ROLE in creds else []
    rooms = await _create_rooms(scenario, res.run_id, actors, bot_user_id, [*also_bot, *peer_ids])
    # Only now, and before the bot starts (its join must come in a sync): see SETUP_SYNC_FILTER.
    await asyncio.gather(*(a.start_sync(SETUP_SYNC_FILTER) for a in actors.values()))
    # The bot is told only of the rooms it is invited to upfront; the others it learns of from an invite.
    bot_rooms = {n: r for n, r in rooms.items() if scenario.rooms[n].invite_bot}
    creator = actors[scenario.actors[0]]
    password_file = state_dir / "bot-password"
    password_file.write_text(passwords["bot"])
    password_file.chmod(0o600)
    bot_state = state_dir / "bot"
    bot_state.mkdir(parents=True, exist_ok=True)
    exec_dir = state_dir / EXEC_DIR_NAME
    exec_dir.mkdir(exist_ok=True)
    actor_ids = {n: a.user_id for n, a in actors.items()}
    if peer_ids:  # the bot's settings name the peer like a test user (knownBots)
        actor_ids[scenario.peer_bot] = peer_ids[0]
    bot_homeserver = hs.base_url
    if uses_fault_proxy(scenario):
        holder["faults"] = await start_fault_proxy(scenario, hs.base_url, actors)
        bot_homeserver = holder["faults"].url
    facts = LaunchFacts(
        homeserver_url=bot_homeserver, server_name=hs.server_name, user_id=bot_user_id, password=passwords["bot"],
        password_file=password_file, access_token=token, device_id=device_id, rooms=bot_rooms, actors=actor_ids,
        provider_base_url=res.model_base_url, provider_api_key=res.provider_api_key, model=res.model_name,
        scenario_id=scenario.id, scenario_title=scenario.title, bot=bot_settings(scenario, actor_ids, bot_rooms),
        encryption=encryption, state_dir=bot_state, trace_file=state_dir / "bot-trace.jsonl", exec_dir=exec_dir,
        provider_timeout_s=scenario.bot.model_timeout or res.provider_timeout_s,
        provider_max_retries=res.provider_max_retries, accounts=accounts,
        registration_token=await _registration_token(res, float(scenario.timeout)),
        appservice=as_bot.facts if as_bot else None,
    )
    launch = build_launch(res.bot_file, facts, res.bot_overrides, {**os.environ, **res.bot_env})
    bot = BotUnderTest(res.bot_file, launch, scenario_dir / "bot.log", facts.trace_file,
                       scenario_dir / "bot-trace.jsonl", res.secrets, fork_server=res.fork_server)
    holder["bot"] = bot
    boot_started = mono_ms()
    peer = None
    if peer_ids:  # started first, so it boots while the bot does
        session = (creds[ROLE].access_token, creds[ROLE].device_id) if creds[ROLE].access_token \
            and creds[ROLE].device_id else await login_for_token(hs.base_url, peer_ids[0], passwords[ROLE])
        res.secrets.append(session[0])
        peer = holder["peer"] = peer_launch(res, scenario, creds[ROLE], passwords[ROLE], session, bot_rooms,
                                            actor_ids, state_dir, scenario_dir)
        peer_start = await peer.start()
        peer.joined = joined_waiter(creator, peer, peer_ids, list(bot_rooms.values()))
    start = await bot.start()
    ready_timeout = min(res.bot_file.ready.timeout, float(scenario.timeout) / 2)
    bot.joined = joined_waiter(creator, bot, [bot_user_id, *also_bot], list(bot_rooms.values()))
    await bot.wait_ready(ready_timeout, start)
    result.botBootMs = round(mono_ms() - boot_started, 1)
    read_at = bot.trace_reader.ready_read_at
    result.botBootMarks = {"t": round(boot_started, 2), "spawnedMs": round(bot.spawned_at - boot_started, 2),
                           "seenMs": result.botBootMs,
                           **({"readyReadMs": round(read_at - boot_started, 2)} if read_at else {})}
    if peer is not None:
        await peer_ready(peer, peer_start, float(scenario.timeout))
    for room_name, spec in scenario.rooms.items():
        if spec.encrypted:
            members = [actors[m] for m in (spec.members if spec.members is not None else scenario.actors)]
            everyone = [bot_user_id, *(a.user_id for a in members)]
            await asyncio.gather(*(a.know_devices(rooms[room_name], [u for u in everyone if u != a.user_id],
                                                  KEYS_TIMEOUT_S) for a in members))
    return ScenarioContext(
        scenario=scenario, homeserver=hs, provider=res.provider, actors=actors, bot=bot, bot_user_id=bot_user_id,
        bot_name=creds["bot"].localpart, rooms=rooms, markers=res.markers, artifact_dir=scenario_dir,
        state_dir=state_dir, include_bodies=res.include_bodies, reply_edit_wait_s=res.reply_edit_wait_s,
        step_timeout_cap_s=res.step_timeout_cap_s,
        rerender=config_renderer(scenario, res, facts, actor_ids, bot_rooms),
        fault_proxy=holder.get("faults"), appservice=as_bot,
        bot_accounts={n: a["user_id"] for n, a in accounts.items()},
        registered_prefix=as_bot.lease.prefix if as_bot else res.bot_file.registration_prefix,
        peer=peer, bot_access_token=token,
        peer_user_id=peer_ids[0] if peer_ids else "", peer_name=scenario.peer_bot or "",
    )


# How many accounts a bot with `registration: token` may register per scenario.
REGISTRATION_USES = 5


async def _registration_token(res: RunResources, valid_s: float) -> str | None:
    """For `registration: token`: a fresh token of a few uses, valid for the scenario, on the run's own homeserver;
    on another the user's own (the run checked before it started that there is one)."""
    if res.bot_file.registration is None:
        return None
    hs = res.homeserver
    token = await hs.registration_token(REGISTRATION_USES, valid_s) if hs.mints_registration_tokens \
        else os.environ.get(USER_REGISTRATION_TOKEN)
    if not token:  # the run checked before it started; an environment changed since is still no traceback
        raise QAError(f"registration: token: no token for the bot ({USER_REGISTRATION_TOKEN} is not set)")
    res.secrets.extend([token, *getattr(res.homeserver, "secrets", [])])  # the token's minter too
    return token


async def _extra_accounts(res: RunResources, creds: dict[str, Any], passwords: dict[str, str]
                          ) -> dict[str, dict[str, str]]:
    """The bot file's extra accounts, each with a session (MATRIX_QA_ACCOUNTS): the one registration made, else a
    login."""
    names = list(res.bot_file.accounts)

    async def session(name: str) -> tuple[str, str]:
        made = creds[f"bot.{name}"]
        if made.access_token and made.device_id:
            return made.access_token, made.device_id
        token, device_id = await login_for_token(res.homeserver.base_url, made.user_id, passwords[f"bot.{name}"])
        res.secrets.append(token)
        return token, device_id

    sessions = await asyncio.gather(*(session(n) for n in names))
    return {name: {"user_id": creds[f"bot.{name}"].user_id, "password": passwords[f"bot.{name}"],
                   "access_token": token, "device_id": device_id}
            for name, (token, device_id) in zip(names, sessions, strict=True)}


@dataclass
class _RoomPlan:
    name: str
    spec: Any
    creator: Actor
    invite: list[str]
    joiners: list[Actor]


async def _create_rooms(scenario: Any, run_id: str, actors: dict[str, Actor], bot_user_id: str,
                        also_bot: list[str] | None = None) -> dict[str, str]:
    """Every scenario room, created side by side (each createRoom carries its invites and encryption state),
    then every member's join at once: nothing in one room waits for another room. The bot's extra accounts
    (`also_bot`) are invited wherever the bot is."""
    plans = []
    for room_name, spec in scenario.rooms.items():
        members = spec.members if spec.members is not None else list(scenario.actors)
        # A direct chat is opened by its one member, as a person starts a DM; other rooms by the first actor.
        creator = actors[members[0]] if spec.direct else actors[scenario.actors[0]]
        joiners = [actors[m] for m in members if actors[m] is not creator]
        invite = ([bot_user_id, *(also_bot or [])] if spec.invite_bot else []) + [a.user_id for a in joiners]
        plans.append(_RoomPlan(room_name, spec, creator, invite, joiners))

    room_ids = await asyncio.gather(*(
        plan.creator.create_room(f"{scenario.id} {plan.name} {run_id}", plan.invite, encrypted=plan.spec.encrypted,
                                 direct=plan.spec.direct) for plan in plans))
    # In scenario order, one at a time: each PUT replaces the creator's whole m.direct, so with two DMs the
    # last one named wins, as it always did.
    for plan, room_id in zip(plans, room_ids, strict=True):
        if plan.spec.direct:
            await plan.creator.mark_direct(bot_user_id, room_id)
    await asyncio.gather(*(joiner.join(room_id) for plan, room_id in zip(plans, room_ids, strict=True)
                           for joiner in plan.joiners))
    return {plan.name: room_id for plan, room_id in zip(plans, room_ids, strict=True)}


def config_renderer(scenario: Any, res: RunResources, facts: LaunchFacts, actor_ids: dict[str, str],
                    bot_rooms: dict[str, str]) -> Any:
    """For set_bot_config: the bot's config rendered again with the changes so far and generation N
    (template variable `config_generation`, 1 at launch)."""

    def render(changes: list[Any]) -> str | None:
        facts.bot = bot_settings(scenario, actor_ids, bot_rooms, changes)
        launch = build_launch(res.bot_file, facts, res.bot_overrides, {**os.environ, **res.bot_env},
                              generation=len(changes) + 1)
        return launch.config_text

    return render


def joined_waiter(watcher: Actor, bot: BotUnderTest, bot_user_ids: list[str], room_ids: list[str]) -> Any:
    """Readiness `joined`: the watcher sees the join of each of the bot's accounts in every room, then the bot's
    output settles."""

    async def wait(timeout_s: float) -> None:
        for room_id in room_ids:
            for user_id in bot_user_ids:
                who = "the bot" if user_id == bot_user_ids[0] else f"the bot's account {user_id}"
                bot.waiting_on = f"{who} to join {room_id}"
                await watcher.events.wait_for(
                    lambda e, r=room_id, u=user_id: e.get("type") == "m.room.member" and e.get("state_key") == u
                    and e.get("room_id") == r and (e.get("content") or {}).get("membership") == "join",
                    timeout_s, f"{who} to join {room_id}")
        bot.waiting_on = None
        await settle(bot)

    return wait


async def _run_steps(ctx: ScenarioContext, steps: AsyncIterable[Any], result: ScenarioResult, say: Any) -> None:
    index = 0
    async for step in steps:
        index += 1
        step_result = StepResult(index=index, kind=step.kind, status="fail")
        result.steps.append(step_result)
        began = mono_ms()
        ctx.method = None
        ctx.account = None
        try:
            step_result.detail = await until_bot_dies(ctx, step.run(ctx), index, step.kind,
                                                      watches_own_start=step.owns_bot_start)
            step_result.status = "pass"
            say(f"    {index}. {step.kind}: {step_result.detail}")
        except StepFailed as exc:
            step_result.detail = exc.expected
            raise
        except ConfigError as exc:
            raise located(ctx.scenario, ("steps", index - 1, step.kind), exc) from None
        finally:
            step_result.durationMs = round(mono_ms() - began, 1)
            step_result.method = ctx.method
            step_result.account = ctx.account
        for check in ctx.negative_checks:
            if check.step == 0:
                check.step = index


def config_error(result: ScenarioResult, exc: ConfigError, errors: list[str]) -> None:
    """A configuration error found mid-scenario is the run's error (exit 2, where in which file), never a verdict
    on the bot: the scenario was cut short, not failed, and its step says so."""
    message = str(exc)
    result.status = "interrupted"
    result.details = f"{CONFIG_ERROR}: {message.splitlines()[0]}"
    result.failure = Failure(expected="a configuration this scenario can run with", seen=message.splitlines())
    running = result.steps[-1] if result.steps else None
    if running is not None and running.status == "fail":
        running.status = "interrupted"
        running.detail = f"NOT CHECKED: {CONFIG_ERROR}: {message.splitlines()[0]}"
    errors.append(message)
