"""A scenario's faults on purpose, from start to record: the fault proxy in front of the bot's client-server
requests, and at the end every fault served filed as evidence (`scenarios/<id>/fault-hits.json`, `faultHits` in
the summary, the report's "Faults served"): the proxy's hits (source `homeserver`), the application-service
endpoint's push faults (`push`, qa.harness.push_faults) and the mock provider's (`provider`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from qa.evidence.faults import hang_ended_by
from qa.harness.fault_proxy import FaultProxy
from qa.report.summary import ScenarioResult
from qa.shared.redact import redact
from qa.waiting import WaitTimeout

HELD_END_S = 2.0  # the mock looks for a closed connection every _DISCONNECT_CHECK_S
HIT_FIELDS = ("rule", "action", "method", "path", "status", "what")


def uses_fault_proxy(scenario: Any) -> bool:
    """A client rule (push rules act in the application-service endpoint, not the proxy) or a step that needs it."""
    return any(rule.target == "client" for rule in scenario.faults) \
        or any(step.uses_fault_proxy for step in scenario.steps)


async def start_fault_proxy(scenario: Any, homeserver_url: str, actors: dict[str, Any]) -> FaultProxy:
    """Only the bot goes through the proxy: the test users must see the homeserver as it really is."""
    proxy = FaultProxy(homeserver_url, [rule for rule in scenario.faults if rule.target == "client"])
    await proxy.start()
    for actor in actors.values():  # hold_to_device: m.room_key knows a room key by what its sharer reported
        actor.client.on_room_keys = proxy.note_room_keys
    return proxy


async def file_fault_hits(proxy: FaultProxy | None, appservice: Any, ctx: Any, scenario_dir: Path,
                          result: ScenarioResult, secrets: list[str], bot_stopped_at: float | None = None) -> None:
    """Stop the proxy (bounded) and file its hits, the push faults the bot's transactions met and the provider
    faults this scenario was served."""
    if bot_stopped_at is not None and ctx is not None and ctx.provider is not None:
        await held_requests_end(ctx.provider)
    served = [e for e in (ctx.provider.journal if ctx is not None and ctx.provider is not None else [])
              if getattr(e, "fault", None)]
    pushed = appservice.artifact() if appservice is not None else None
    hits: list[dict[str, Any]] = []
    artifact: dict[str, Any] = {}
    if proxy is not None:
        await proxy.stop()
        artifact = proxy.artifact()
        hits = [{"source": "homeserver", **{k: h[k] for k in HIT_FIELDS}} for h in proxy.hits]
    if pushed is not None and (pushed["hits"] or any(i["rules"] for i in pushed["installed"])):
        artifact["push"] = pushed
        hits += [{"source": "push", **{k: h[k] for k in HIT_FIELDS}} for h in pushed["hits"]]
    if artifact:
        # Redacted like every artifact: a foreign bot may carry a token in a path.
        (scenario_dir / "fault-hits.json").write_text(redact(json.dumps(artifact, indent=2), secrets),
                                                      encoding="utf-8")
        result.artifacts["faults"] = str((scenario_dir / "fault-hits.json").relative_to(scenario_dir.parent.parent))
    for e in served:
        said = hang_ended_by(e.fault, e.started_at, e.finished_at, bot_stopped_at)
        hits.append({"source": "provider", "rule": e.rule, "action": said, "method": e.method, "path": e.path,
                     "status": e.status, "what": said})
    if artifact or served:
        result.faultHits = hits


async def held_requests_end(provider: Any) -> None:
    """A request the mock still held when the bot was stopped ends as the mock sees the connection gone (it looks
    now and then): wait for that, bounded, so the hang is filed among the faults served, with who ended it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HELD_END_S
    for entry in [e for e in provider.journal if e.state == "in_flight" and (e.hold or e.latency_ms)]:
        with contextlib.suppress(WaitTimeout, TimeoutError):
            await provider.wait_for(lambda e, held=entry: e is held and e.state != "in_flight",
                                    max(deadline - loop.time(), 0.0))
