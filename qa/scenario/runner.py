"""Run one scenario: provision its own users, rooms and bot process, execute its steps, tear it all down.

Everything a scenario creates carries a per-run suffix, so scenarios never share state and can later run side
by side on one homeserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.actors import Actor
from qa.clock import mono_ms
from qa.errors import QAError
from qa.harness.bot_process import BotProcess, describe_record
from qa.harness.probe import follow_and_probe, stop_prober
from qa.homeserver.base import Homeserver
from qa.report.summary import Failure, ScenarioResult, StepResult
from qa.scenario.context import ScenarioContext, StepFailed
from qa.scenario.steps import STEPS

BOT_READY_TIMEOUT_S = 60.0
KEYS_TIMEOUT_S = 30.0


def uses_encryption(scenario: Any) -> bool:
    return bool(scenario.bot.encryption) or any(spec.encrypted for spec in scenario.rooms.values())


@dataclass
class RunResources:
    """What every scenario of a run shares: the homeserver, the model endpoint and where files go."""

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
    observed: list[dict[str, Any]]


def _localpart(role: str, scenario_id: str, run_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", scenario_id.lower()).strip("-")[:40]
    return f"mqa-{role}-{slug}-{run_id[-6:].lower()}"


def bot_agent_config(
    scenario: Any, res: RunResources, bot_user_id: str, rooms: dict[str, str], actor_ids: dict[str, str],
    state_dir: Path, trace_path: Path, password_file: Path,
) -> dict[str, Any]:
    """Translate the scenario's `bot:` block (actor names) into the bot's own config (Matrix ids)."""
    bot = scenario.bot
    allowlist = [actor_ids[a] for a in bot.allowlist] if bot.allowlist is not None else None
    room_config = {"requireMention": bot.require_mention, "allowlist": allowlist, "allowBots": bot.allow_bots}
    lock = bot.session_write_lock.model_dump(by_alias=True, exclude_none=True) if bot.session_write_lock else {}
    config: dict[str, Any] = {
        "homeserver": res.homeserver.base_url,
        "userId": bot_user_id,
        "passwordFile": str(password_file),
        "stateDir": str(state_dir),
        "tracePath": str(trace_path),
        "rooms": {room_id: room_config for room_id in rooms.values()},
        "knownBots": [actor_ids[a] for a in bot.known_bots],
        "model": {"baseUrl": res.model_base_url, "model": res.model_name},
        "session": {"writeLock": lock},
        "approvals": {"textChunkLimit": bot.text_chunk_limit},
        "encryption": uses_encryption(scenario),
    }
    for key, value in res.bot_overrides.items():
        _set_dotted(config, key, value)
    return config


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, last = dotted.split(".")
    for i, part in enumerate(parents):
        if part == "*":  # every entry of a mapping, e.g. rooms.*.requireMention (room ids are unknown upfront)
            for child in node.values():
                _set_dotted(child, ".".join([*parents[i + 1:], last]), value)
            return
        node = node.setdefault(part, {})
    node[last] = value


async def run_scenario(scenario: Any, res: RunResources, say: Any) -> ScenarioResult:
    live = res.provider is None  # a live model: no journal, not deterministic
    if live and scenario.live.skip:
        reason = f"skipped on a live model: {scenario.live.tolerance or 'the scenario needs the mock provider'}"
        say(f"  - {scenario.id} {reason}")
        return ScenarioResult(id=scenario.id, title=scenario.title, status="skip", details=reason)
    result = await _run_scenario(scenario, res, say)
    if live and scenario.live.tolerance:
        result.details = f"{result.details} (live tolerance: {scenario.live.tolerance})"
    return result


async def _run_scenario(scenario: Any, res: RunResources, say: Any) -> ScenarioResult:
    started = mono_ms()
    scenario_dir = res.artifact_dir / "scenarios" / scenario.id
    scenario_dir.mkdir(parents=True, exist_ok=True)
    state_dir = res.state_dir / scenario.id
    state_dir.mkdir(parents=True, exist_ok=True)
    result = ScenarioResult(id=scenario.id, title=scenario.title, status="fail",
                            source=str(getattr(scenario, "source_path", "") or ""))
    actors: dict[str, Actor] = {}
    bot = BotProcess(state_dir / "bot-config.json", scenario_dir / "bot.log", res.bot_env)
    ctx: ScenarioContext | None = None
    probes: list[dict[str, Any]] = []
    prober: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(float(scenario.timeout)):
            ctx = await _provision(scenario, res, actors, bot, state_dir, scenario_dir, result)
            prober = asyncio.create_task(follow_and_probe(bot, state_dir / "bot" / "sessions", probes))
            await _run_steps(ctx, scenario, result, say)
        result.status = "pass"
        result.details = f"{len(scenario.steps)} steps passed"
    except StepFailed as exc:
        failed = next((s for s in result.steps if s.status == "fail"), None)
        result.failure = Failure(step=failed.index if failed else None, stepKind=failed.kind if failed else None,
                                 expected=exc.expected, seen=exc.seen, hints=exc.hints)
        result.details = f"step {failed.index if failed else '?'} ({failed.kind if failed else '?'}): {exc.expected}"
    except TimeoutError:
        running = result.steps[-1] if result.steps else None
        where = f"step {running.index} ({running.kind})" if running else "setup"
        seen = _recent_trace(bot)
        result.failure = Failure(step=running.index if running else None, stepKind=running.kind if running else None,
                                 expected=f"scenario finishes within its timeout of {float(scenario.timeout):g}s",
                                 seen=seen)
        if running:
            running.status = "fail"
        result.details = f"timed out during {where}"
    except QAError as exc:
        result.failure = Failure(expected="scenario infrastructure works", seen=[str(exc)])
        result.details = f"infrastructure: {exc}"
    except Exception as exc:  # a harness or library bug: report it as this scenario's failure, keep the rest
        result.failure = Failure(expected="the harness runs the scenario", seen=traceback.format_exception(exc)[-8:])
        result.details = f"harness error: {type(exc).__name__}: {exc}"
    finally:
        if prober is not None and (problem := await stop_prober(prober)):
            say(f"  ! {problem}")
        res.probes.extend({**p, "scenario": scenario.id} for p in probes)
        await bot.stop()
        if actors:
            # One witness per scenario is enough: every member sees the same room timeline.
            watcher = next(iter(actors.values()))
            res.observed.extend(
                {**e, "scenario": scenario.id, "observedBy": watcher.name} for e in watcher.events.items
            )
        for actor in actors.values():
            with contextlib.suppress(Exception):
                await actor.close()
        _collect_artifacts(state_dir, scenario_dir, result)
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
    scenario: Any, res: RunResources, actors: dict[str, Actor], bot: BotProcess,
    state_dir: Path, scenario_dir: Path, result: ScenarioResult,
) -> ScenarioContext:
    hs = res.homeserver
    passwords: dict[str, str] = {}
    creds = {}
    for role in ["bot", *scenario.actors]:
        passwords[role] = secrets.token_urlsafe(18)
        res.secrets.append(passwords[role])
        creds[role] = await hs.register_user(_localpart(role, scenario.id, res.run_id), passwords[role])
    encryption = uses_encryption(scenario)
    for name in scenario.actors:
        # Crypto stores hold private keys, so they live in the state dir, never in the artifacts.
        actors[name] = Actor(name, hs.base_url, creds[name].user_id, passwords[name], state_dir / "actors" / name,
                             encryption=encryption)
    await asyncio.gather(*(a.login() for a in actors.values()))
    await asyncio.gather(*(a.start_sync() for a in actors.values()))
    bot_user_id = creds["bot"].user_id
    creator = actors[scenario.actors[0]]
    rooms: dict[str, str] = {}
    for room_name, spec in scenario.rooms.items():
        members = spec.members if spec.members is not None else list(scenario.actors)
        invite = [bot_user_id] + [actors[m].user_id for m in members if actors[m] is not creator]
        room_id = await creator.create_room(f"{scenario.id} {room_name} {res.run_id}", invite,
                                            encrypted=spec.encrypted)
        rooms[room_name] = room_id
        await asyncio.gather(*(actors[m].join(room_id) for m in members if actors[m] is not creator))
    password_file = state_dir / "bot-password"
    password_file.write_text(passwords["bot"])
    password_file.chmod(0o600)
    config = bot_agent_config(scenario, res, bot_user_id, rooms, {n: a.user_id for n, a in actors.items()},
                              state_dir / "bot", scenario_dir / "bot-trace.jsonl", password_file)
    bot.config_path.write_text(json.dumps(config, indent=2))
    boot_started = mono_ms()
    start = await bot.start()
    await bot.wait_ready(BOT_READY_TIMEOUT_S, start)
    result.botBootMs = round(mono_ms() - boot_started, 1)
    for room_name, spec in scenario.rooms.items():
        if spec.encrypted:
            members = [actors[m] for m in (spec.members if spec.members is not None else scenario.actors)]
            everyone = [bot_user_id, *(a.user_id for a in members)]
            await asyncio.gather(*(a.know_devices(rooms[room_name], [u for u in everyone if u != a.user_id],
                                                  KEYS_TIMEOUT_S) for a in members))
    return ScenarioContext(
        scenario=scenario, homeserver=hs, provider=res.provider, actors=actors, bot=bot, bot_user_id=bot_user_id,
        bot_name=creds["bot"].localpart, rooms=rooms, markers=res.markers, artifact_dir=scenario_dir,
    )


async def _run_steps(ctx: ScenarioContext, scenario: Any, result: ScenarioResult, say: Any) -> None:
    for index, step in enumerate(scenario.steps, start=1):
        step_result = StepResult(index=index, kind=step.kind, status="fail")
        result.steps.append(step_result)
        began = mono_ms()
        try:
            step_result.detail = await STEPS[step.kind](ctx, step)
            step_result.status = "pass"
            say(f"    {index}. {step.kind}: {step_result.detail}")
        except StepFailed as exc:
            step_result.detail = exc.expected
            raise
        finally:
            step_result.durationMs = round(mono_ms() - began, 1)
        for check in ctx.negative_checks:
            if check.step == 0:
                check.step = index


def invalid_transcript_lines(sessions_dir: Path) -> list[str]:
    problems = []
    for path in sorted(sessions_dir.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                json.loads(line)
            except ValueError as exc:
                problems.append(f"{path.name}:{number}: {exc}: {line[:80]!r}")
    return problems


def _recent_trace(bot: BotProcess) -> list[str]:
    return ["bot trace: " + describe_record(r) for r in bot.trace.items[-10:]]


def _collect_artifacts(state_dir: Path, scenario_dir: Path, result: ScenarioResult) -> None:
    sessions = state_dir / "bot" / "sessions"
    if sessions.exists():
        target = scenario_dir / "transcripts"
        shutil.copytree(sessions, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
        result.artifacts["transcripts"] = str(target.relative_to(scenario_dir.parent.parent))
    for name in ("bot-trace.jsonl", "bot.log"):
        if (scenario_dir / name).exists():
            result.artifacts[name.split(".")[0]] = str((scenario_dir / name).relative_to(scenario_dir.parent.parent))
