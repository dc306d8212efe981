"""How a run uses recording and replay: the checks of the flags, the providers' start, and what happens around
each scenario. Kept here so qa.run only calls these hooks.

- `--provider live --record DIR`: the bot reaches the live model through qa.provider.recorder, which writes
  `DIR/<scenario>.yaml` when the scenario ends (a skipped scenario leaves none).
- `--provider replay --cassettes DIR`: qa.provider.replay answers; a scenario without a cassette is skipped
  with the reason, one whose bot asked something unrecorded fails with the diff (qa.report.replay_failure).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from qa.kernel.errors import ConfigError
from qa.provider.placeholders import scope_values


def record_replay_misplaced(options: Any) -> list[str]:
    """Flags of recording or replay given to a run that does neither; ConfigError for what replay lacks."""
    if options.provider == "replay" and options.cassettes_dir is None:
        raise ConfigError("--provider replay needs --cassettes DIR (the cassettes a `--provider live --record DIR` "
                          "run wrote, e.g. fixtures/cassettes)")
    if options.record_dir is not None and options.provider != "live":
        raise ConfigError(f"--record records a live model's answers; it needs --provider live (this run: "
                          f"--provider {options.provider})")
    if options.record_dir is not None and options.record_dir.exists() and not options.record_dir.is_dir():
        raise ConfigError(f"--record {options.record_dir}: exists and is not a directory")
    misplaced = []
    if options.provider != "replay":
        misplaced += [flag for flag, value in (("--cassettes", options.cassettes_dir),
                                               ("--replay-speed", options.replay_speed)) if value is not None]
    if options.provider == "replay":
        from qa.provider.replay import parse_speed

        parse_speed(options.replay_speed or "recorded")
    return misplaced


def load_for_replay(options: Any, plan: list[Any]) -> dict[str, Any]:
    """Before anything starts: the planned scenarios' cassettes, every one of them valid (exit 2 otherwise)."""
    if options.provider != "replay":
        return {}
    from qa.provider.replay import load_cassettes

    return load_cassettes(Path(options.cassettes_dir), [s.id for s in plan])


async def start_replay(options: Any, cassettes: dict[str, Any], say: Any) -> Any:
    from qa.provider.replay import ReplayProvider, parse_speed

    provider = ReplayProvider(cassettes, Path(options.cassettes_dir), speed=parse_speed(options.replay_speed
                                                                                         or "recorded"))
    await provider.start()
    pace = options.replay_speed or "recorded"
    say(f"replay provider on {provider.base_url}: {len(cassettes)} cassette(s) from {options.cassettes_dir}, "
        f"model {provider.model}, pace {pace}")
    return provider


async def start_recording(live: Any, directory: Path, secrets: list[str], say: Any) -> Any:
    from qa.provider.recorder import RecordingProxy

    proxy = RecordingProxy(base_url=live.base_url, api_key=live.api_key, model=live.model,
                           timeout_s=live.timeout_s, directory=Path(directory), secrets=secrets,
                           endpoint=live.base_url_host, api=getattr(live, "api", "chat"))
    await proxy.start()
    say(f"recording every model exchange to {directory}/<scenario>.yaml (through {proxy.base_url})")
    return proxy


def bot_key(live: Any, options: Any) -> str:
    """The key the bot is handed: the live key, except when recording (the proxy adds it, the bot never
    holds it) and on the mock and replay (which need none)."""
    if live is None:
        return "mock-key"
    if options.record_dir is not None:
        from qa.provider.recorder import STAND_IN_KEY

        return STAND_IN_KEY
    return str(live.api_key)


def bind_scope(provider: Any, scenario_id: str, resources: Any, run_id: str) -> Any:
    """The scenario's run values go to a recording or replaying provider; a recording bot gets its scope's URL."""
    if not hasattr(provider, "bind_scope") or (hasattr(provider, "skip_reason")
                                                and provider.skip_reason(scenario_id)):
        return resources
    provider.bind_scope(scenario_id, scope_values(resources.markers, run_id))
    if resources.provider is None:  # recording: the run's live semantics stay, the URL is the proxy's
        return replace(resources, model_base_url=provider.scoped_base_url(scenario_id))
    return resources


def after_scenario(provider: Any, scenario_id: str, result: Any, say: Any) -> None:
    if hasattr(provider, "finish_scope"):
        if result.status == "skip":
            provider.finish_scope(scenario_id, None)
            return
        from qa.provider.cassette import CassetteError

        try:
            path = provider.finish_scope(scenario_id, result.status)
        except CassetteError as exc:  # a recorder bug, or an answer the format cannot hold: the run says so
            say(f"  ! the cassette written for {scenario_id} will not replay: {exc}")
            return
        if path is not None:
            note = "" if result.status == "pass" else f" (status {result.status}: look before committing it)"
            say(f"  recorded {path}{note}")
    elif hasattr(provider, "misses"):
        from qa.provider.replay import rerecord_hint
        from qa.report.replay_failure import apply_replay_misses

        misses = provider.misses(scenario_id)
        api = provider.api_of(scenario_id) if hasattr(provider, "api_of") else "chat"
        apply_replay_misses(result, misses, provider.problems(scenario_id),
                            rerecord_hint(provider.directory, scenario_id, provider.model, api))
        unused = provider.unused(scenario_id)
        if unused and not misses and result.status != "skip":  # after a miss, unused ones go without saying
            result.details += f"; replay: {unused} recorded exchange(s) never asked for"
