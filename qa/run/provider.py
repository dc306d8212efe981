"""Chapter 2 of a run (qa.run): the model provider (mock, live or replay) started from the options, and what
the record keeps of it: its description, and the mock's journal of requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from qa.harness.output import Output
from qa.provider.record_replay import start_recording, start_replay
from qa.report.lock_evidence import Interval
from qa.report.summary import ProviderInfo
from qa.run.options import RunOptions


async def start_provider(options: RunOptions, live: Any, plan: list[Any], cassettes: dict[str, Any], out: Output,
                         keep: Callable[[Any], None]) -> None:
    """`keep` is given the provider as soon as it exists: a run stopped while it starts still stops it."""
    if options.provider == "replay":
        keep(await start_replay(options, cassettes, out.say))
        return
    if live is not None:
        from qa.provider.live import LiveProvider

        provider: Any = LiveProvider(live)
        keep(provider)
        await provider.start()
        out.say(f"live provider at {live.base_url_host}, model {live.model}: {provider.checked}")
        if options.record_dir is not None:
            keep(await start_recording(live, options.record_dir, out.secrets, out.say))
        mock_only = [s.id for s in plan if s.provider.rules]
        if mock_only:
            out.say(f"note: the mock-provider rules of {', '.join(mock_only)} do not apply to a live model")
        return
    from qa.library import rules_root_for
    from qa.provider.mock import MockProvider
    from qa.provider.rules import load_rule_files

    rule_files = list(options.provider_rules)
    for scenario in plan:
        rule_files += [rules_root_for(scenario.source_path) / p for p in scenario.provider.rules]
    provider = MockProvider(load_rule_files(rule_files) if rule_files else None)
    keep(provider)
    await provider.start()
    out.say(f"mock provider on {provider.base_url}")


def provider_info(provider: Any, live: Any) -> ProviderInfo:
    if live is not None:
        # Host only: a base URL's path or query can carry deployment names or tokens.
        return ProviderInfo(mode="live", model=live.model, baseUrlHost=live.base_url_host or None)
    try:  # a provider interrupted while starting has no address yet; the record is still written
        base_url = getattr(provider, "base_url", "") or ""
    except Exception:
        base_url = ""
    return ProviderInfo(mode=getattr(provider, "mode", "mock"), model=getattr(provider, "model", "mock-model"),
                        baseUrlHost=urlparse(base_url).netloc or None)


def journal_intervals(provider: Any, live: Any, scenario_id: str) -> list[Interval]:
    """The scenario's model requests as the mock saw them (start, end) on the shared monotonic clock."""
    if provider is None or live is not None or not hasattr(provider, "scoped"):
        return []
    return [(float(e.started_at), float(e.finished_at)) for e in provider.scoped(scenario_id).journal
            if e.is_chat and e.finished_at is not None]


def write_journal(provider: Any, run_dir: Path, out: Output) -> None:
    """The provider journal is evidence too (what the model was asked, and when). Only the mock keeps one."""
    if provider is not None and hasattr(provider, "journal_as_json"):
        path = run_dir / "provider-journal.json"
        path.write_text(out.redact(json.dumps(provider.journal_as_json(), indent=1)), encoding="utf-8")
