"""The replay provider of `--provider replay --cassettes DIR`: the mock provider's server and journal
(qa.provider.server), answering from recorded cassettes (qa.provider.cassette) instead of rules, in whichever model
API the bot asks (qa.provider.apis).

Each scenario has its scope (`/scope/<scenario-id>/v1`) and its cassette. A request is templated with this
run's values and matched (qa.provider.matching); the recorded response goes back with this run's markers put
in, at the recorded pace (`speed` 1.0), faster (`speed` 4.0: four times as fast) or at once (`speed` None).
A request with no match is answered with an HTTP 400 the SDK does not retry, and kept as a miss: the run fails
that scenario with the diff against the nearest recorded request (`misses`).

The journal is the mock's (qa.provider.journal.JournalEntry), so `expect_model_request` and the lock evidence
work on a replay as on the mock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from qa.kernel.errors import ConfigError
from qa.provider import cassette as cassettes
from qa.provider.answering import error_response, usage_of
from qa.provider.apis.base import ModelApi, ParsedRequest, usage_from
from qa.provider.apis.chat import CHAT
from qa.provider.cassette import Cassette, Exchange, response_summary
from qa.provider.journal import JournalEntry
from qa.provider.matching import Matcher, canonical_request
from qa.provider.placeholders import PlaceholderError, Placeholders
from qa.provider.rules import ErrorReply, Reply, ToolCall
from qa.provider.server import ModelServer
from qa.shared.replay_miss import Miss

# What a re-recording of a cassette needs, per API: the `--api` flag and the variable the key is read from.
_RECORD_FLAGS = {"chat": ("", "OPENAI_API_KEY"), "responses": (" --api responses", "OPENAI_API_KEY"),
                 "anthropic": (" --api anthropic", "ANTHROPIC_API_KEY")}


def parse_speed(text: str) -> float | None:
    """`--replay-speed`: recorded (1.0), fast (None: no waiting), or a factor like 2 (twice the recorded pace)."""
    if text == "recorded":
        return 1.0
    if text == "fast":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ConfigError(f"--replay-speed expects recorded, fast or a factor above 0 (2 = twice as fast), "
                          f"got {text!r}")
    return value


def load_cassettes(directory: Path, scenario_ids: Iterable[str]) -> dict[str, Cassette]:
    """The cassettes of the planned scenarios that have one; a broken one is exit 2 naming file, line, field."""
    if not directory.is_dir():
        raise ConfigError(f"--cassettes {directory}: not a directory (record one with "
                          f"`matrix-qa run --provider live --model MODEL --record {directory}`)")
    found: dict[str, Cassette] = {}
    for scenario_id in scenario_ids:
        try:
            path = cassettes.find(directory, scenario_id)
        except OSError as exc:  # a directory we may list but not enter, or not read at all
            raise ConfigError(f"--cassettes {directory}: cannot read: {exc.strerror or exc}") from None
        if path is None:
            continue
        loaded = cassettes.load(path)
        if loaded.scenario != scenario_id:
            raise cassettes.CassetteError(f"{path}:1: scenario: says {loaded.scenario!r}, but the file is "
                                          f"{scenario_id!r}'s cassette")
        found[scenario_id] = loaded
    return found


def rerecord_hint(directory: Path, scenario_id: str, model: str, api: str = "chat") -> str:
    flag, key = _RECORD_FLAGS.get(api, _RECORD_FLAGS["chat"])
    return (f"re-record it: `matrix-qa run --provider live{flag} --model {model} --record {directory} "
            f"--scenario {scenario_id}` (key in {key}), then commit {directory}/{scenario_id}.yaml")


@dataclass
class _Scope:
    cassette: Cassette
    values: dict[str, str]
    matcher: Matcher
    misses: list[Miss] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def base_scenario_id(scope: str) -> str:
    """`x~retry` (an infrastructure retry, qa.report.repeats) is scenario `x`: its cassette is `x`'s."""
    return scope.split("~", 1)[0]


class ReplayProvider(ModelServer):
    mode = "replay"
    tag = "replay"

    def __init__(self, loaded: Mapping[str, Cassette], directory: Path, *, speed: float | None = 1.0,
                 host: str = "127.0.0.1") -> None:
        models = [c.model for c in loaded.values()]
        super().__init__(model=max(set(models), key=models.count) if models else "replay-model", host=host)
        self.cassettes = dict(loaded)
        self.directory = directory
        self.speed = speed
        self._scopes: dict[str, _Scope] = {}

    def api_of(self, scenario_id: str) -> str:
        """The model API a scenario's cassette was recorded with (for the re-recording hint)."""
        loaded = self.cassettes.get(base_scenario_id(scenario_id))
        return loaded.api if loaded is not None and loaded.api else "chat"

    def skip_reason(self, scenario_id: str) -> str | None:
        scenario_id = base_scenario_id(scenario_id)
        if scenario_id in self.cassettes:
            return None
        return (f"skipped: no cassette {self.directory}/{scenario_id}.yaml to replay; "
                + rerecord_hint(self.directory, scenario_id, self.model).replace("re-record it", "record one"))

    def bind_scope(self, scope: str, values: Mapping[str, str]) -> None:
        loaded = self.cassettes[base_scenario_id(scope)]  # an infrastructure retry replays the same cassette
        self._scopes[scope] = _Scope(loaded, dict(values), Matcher(loaded.exchanges))

    def misses(self, scope: str) -> list[Miss]:
        state = self._scopes.get(scope)
        return list(state.misses) if state else []

    def unused(self, scope: str) -> int:
        """Recorded exchanges this run never asked for (the bot asks less than it did): a note, not a failure."""
        state = self._scopes.get(scope)
        return len(state.matcher.unused) if state else 0

    def problems(self, scope: str) -> list[str]:
        state = self._scopes.get(scope)
        return list(state.problems) if state else []

    async def _answer(self, request: web.Request, entry: JournalEntry, api: ModelApi,
                      parsed: ParsedRequest) -> web.StreamResponse:
        """The recorded exchange this request matches, in the request's API; a miss otherwise."""
        state = self._scopes.get(request.match_info.get("scope", ""))
        if state is None:
            entry.error = ErrorReply(400, "matrix-qa replay: requests go to a scenario's own base URL "
                                     "(/scope/<scenario>/v1)", "invalid_request_error", code="replay_no_scope")
            return error_response(api, entry.error, entry.id)
        placeholders = Placeholders(state.values)
        wanted = canonical_request(parsed.chat_body(), placeholders, api=parsed.api)
        exchange = state.matcher.match(wanted)
        label = state.cassette.path.name if state.cassette.path else f"{state.cassette.scenario}.yaml"
        if exchange is None:
            miss = state.matcher.miss(wanted, label)
            state.misses.append(miss)
            entry.unmatched = True
            near = f"; nearest recorded: #{miss.nearest.index}" if miss.nearest else ""
            entry.error = ErrorReply(400, f"matrix-qa replay: this request matches no recorded exchange of {label}"
                                     f"{near}", "invalid_request_error", code="replay_mismatch")
            self._notify()
            return error_response(api, entry.error, entry.id)
        entry.rule = f"{label} #{exchange.index}"
        try:
            response = placeholders.expand_data(exchange.response)
        except PlaceholderError as exc:
            state.problems.append(f"{label} #{exchange.index}: the response names a placeholder this request "
                                  f"does not carry: {exc}")
            entry.error = ErrorReply(500, "matrix-qa replay: the recorded response cannot be filled in",
                                     "server_error")
            return error_response(api, entry.error, entry.id)
        return await self._replay(request, entry, api, parsed, exchange, response)

    def _wait_s(self, at_ms: float) -> float:
        return 0.0 if self.speed is None else float(at_ms) / 1000 / self.speed

    async def _replay(self, request: web.Request, entry: JournalEntry, api: ModelApi, parsed: ParsedRequest,
                      exchange: Exchange, response: dict[str, Any]) -> web.StreamResponse:
        text, calls, finish = response_summary(response)
        chunks = response.get("chunks") if exchange.request.get("stream") else None
        last_ms = max([float(response["at_ms"]), *(float(c["at_ms"]) for c in chunks or [])])
        # The recorded model time counts as model latency, as the mock's simulated latency does.
        entry.latency_ms = round(self._wait_s(last_ms) * 1000)
        reply = Reply(text, [ToolCall(c.id, c.name, c.arguments) for c in calls])
        if exchange.status == 200:
            entry.reply = reply
        self._notify()
        began = time.monotonic()
        if exchange.status != 200:
            await self._pause(self._wait_s(response["at_ms"]))
            error = response["error"]
            entry.error = ErrorReply(exchange.status, str(error.get("message", "")), str(error.get("type", "")),
                                     code=error.get("code"))
            body = {"type": "error", "error": error} if api.name == "anthropic" else {"error": error}
            return web.json_response(body, status=exchange.status, headers={"x-request-id": entry.id})
        recorded = response.get("usage")
        usage = usage_from(recorded) if isinstance(recorded, dict) else usage_of(entry, reply)
        ctx = self._context(entry, parsed, usage, finish=finish)
        if chunks is None:
            await self._pause(self._wait_s(response["at_ms"]))
            self._remember(api, ctx, reply)
            body = api.answer(reply, ctx)
            if isinstance(recorded, dict):
                body["usage"] = recorded
            elif api is CHAT:
                del body["usage"]  # as recorded: the endpoint sent none
            return web.json_response(body, headers={"x-request-id": entry.id})

        def pace(chunk: Mapping[str, Any]) -> float:
            return began + self._wait_s(chunk["at_ms"]) - time.monotonic()

        return await self._send(request, entry, api, ctx, reply, chunks, pace)

    async def _pause(self, seconds: float, request: web.Request | None = None) -> None:
        if seconds > 0:
            await super()._pause(seconds, request)
