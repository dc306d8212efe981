"""The mock model provider: a real HTTP server speaking the model APIs of qa.provider.apis -- OpenAI Chat
Completions (`/v1/chat/completions`), OpenAI Responses (`/v1/responses`), Anthropic Messages (`/v1/messages`).

The bot under test talks to it exactly as it would talk to a live provider, through its normal SDK. Replies come
from rules (qa.provider.rules), the same rules for every API: a rule matches the request's common view (its last
user text, tools, tool results) and its answer is rendered in the request's API. Every request is journaled
(qa.provider.journal) with monotonic timestamps (qa.kernel.clock) so the report can line model I/O up against the bot's
lock holds.

The harness runs it in-process, on the harness's own event loop:

    provider = MockProvider(load_rule_files(paths))
    await provider.start()                      # bot config gets provider.base_url and provider.model
    entry = await provider.wait_in_flight(lambda e: e.contains(token), timeout=10)
    ...                                         # probe the session lock while the model call is open
    await provider.stop()

Standalone: `python -m qa.provider.mock --port 8089 --rules fixtures/mock-provider/x.yaml` prints the base
URL on stdout and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from qa.kernel import event_loop
from qa.kernel.clock import mono_ms
from qa.kernel.errors import ConfigError
from qa.provider.answering import CLIENT_GONE, client_gone, error_response, rules_view, until_any, usage_of
from qa.provider.apis.base import ModelApi, ParsedRequest, is_text_chunk, reply_chunks
from qa.provider.journal import JournalEntry
from qa.provider.rules import (
    DEFAULT_FALLBACK_TEXT,
    Decision,
    Rule,
    RuleFileError,
    decide,
    load_default_rules,
    load_rule_files,
)
from qa.provider.server import ModelServer, ScopedProvider, scope_prefix

# Kept importable from here: the journal entry and the scoped view predate their own modules.
__all__ = ["JournalEntry", "MockProvider", "ScopedProvider", "scope_prefix"]

log = logging.getLogger(__name__)


class MockProvider(ModelServer):
    tag = "mock"

    def __init__(
        self,
        rules: Sequence[Rule] | None = None,
        *,
        model: str = "mock-model",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        include_builtins: bool = True,
        fallback_text: str = DEFAULT_FALLBACK_TEXT,
    ) -> None:
        super().__init__(model=model, api_key=api_key, host=host, port=port)
        # Given rules first, built-ins last: a scenario's rules can override any built-in by matching first.
        self.rules: list[Rule] = list(rules or []) + (load_default_rules() if include_builtins else [])
        self.fallback_text = fallback_text
        self._rule_hits: dict[int, int] = {}  # matches per `every: N` rule (qa.provider.rules.decide)
        self._holds: dict[str, asyncio.Event] = {}
        self._times: dict[tuple[str, str], int] = {}  # how often each `times` rule answered (qa.provider.rules)

    # --- holds -----------------------------------------------------------------------------------------
    # By (scope, name): scenarios side by side (and each attempt of one) share this provider, and one's release
    # must not let another's held request go. "" is the unscoped `/v1`.

    def _hold_event(self, name: str, scope: str = "") -> asyncio.Event:
        return self._holds.setdefault((scope, name), asyncio.Event())

    def release(self, name: str, scope: str = "") -> None:
        """Let requests held under `name` (in `scope`) proceed. Sticky: later requests for the hold pass straight
        through until `rearm_hold`, so a release that races ahead of the request cannot deadlock."""
        self._hold_event(name, scope).set()

    def rearm_hold(self, name: str, scope: str = "") -> None:
        self._hold_event(name, scope).clear()

    def _wake(self) -> None:
        for hold in self._holds.values():
            hold.set()

    # --- answers ---------------------------------------------------------------------------------------

    async def _answer(self, request: web.Request, entry: JournalEntry, api: ModelApi,
                      parsed: ParsedRequest) -> web.StreamResponse:
        """The rules' answer to a well-formed model request, in its API's shape."""
        number = entry.id.removeprefix("req-")
        decision = decide(
            self.rules,
            rules_view(parsed),
            fallback_text=self.fallback_text,
            call_id_prefix=api.call_id_prefix(number),
            hits=self._rule_hits,
            counts=self._times,
        )
        entry.rule = decision.rule_name
        entry.unmatched = decision.rule is None
        entry.latency_ms = decision.latency_ms
        # A stream held after some pieces (`stream.hold_after`) is held there, and only says so once it is.
        held_after = decision.stream.hold_after if parsed.stream and decision.hold is not None else None
        entry.hold = decision.hold if held_after is None else None
        entry.pieces, entry.chunk_delay_ms = decision.stream.pieces, decision.stream.delay_ms
        self._notify()  # now the in-flight entry carries its messages, so predicates can see it

        if entry.hold is not None:
            await self._held(request, entry, decision)
        if decision.latency_ms:
            await self._pause(decision.latency_ms / 1000, request)
        if client_gone(request):
            entry.client_disconnected = True
            if decision.hold is not None or decision.latency_ms:
                # Which side closed it (the bot, or the harness stopping the bot) is the runner's to say.
                entry.fault = "hang: the connection closed while the request was held"  # when: its finishedAt
        entry.fault = entry.fault or decision.fault()

        if decision.error is not None:
            entry.error = decision.error
            return error_response(api, decision.error, entry.id)
        assert decision.reply is not None  # decide() returns a reply or an error
        entry.reply = decision.reply
        ctx = self._context(entry, parsed, usage_of(entry, decision.reply))
        chunks = None
        if parsed.stream:
            chunks = reply_chunks(decision.reply, entry.pieces)
            if parsed.include_usage:
                chunks.append({"usage": api.usage(ctx.usage)})

        paced = 0  # text pieces paced so far: the next one's number while its pause runs

        def pace(chunk: Mapping[str, Any]) -> float:
            nonlocal paced
            if entry.chunk_delay_ms and is_text_chunk(chunk):
                paced += 1
                return entry.chunk_delay_ms / 1000  # paced: a streaming preview can show it
            return 0.0

        async def paused(seconds: float) -> None:
            if held_after is not None and paced == held_after + 1:  # `held_after` pieces are out (flushed)
                entry.hold = decision.hold
                self._notify()  # a step waiting for the hold sees it now
                await self._held(request, entry, decision)
                if entry.hold_end == "client gone":  # the bot gave up on it, as on a hold before the answer
                    entry.client_disconnected = True
                    entry.fault = entry.fault or "hang: the connection closed while the request was held"
            await self._pause(seconds, request)

        return await self._send(request, entry, api, ctx, decision.reply, chunks, pace, decision.stream_fault,
                                paused)

    async def _held(self, request: web.Request, entry: JournalEntry, decision: Decision) -> None:
        """Until released, or the provider stops, or the client has gone (the bot gave up: its finishedAt), or
        the rule's `hold_ms` ran out: the journal says which (`entry.hold_end`)."""
        assert decision.hold is not None and decision.rule is not None
        released = self._hold_event(decision.hold, request.match_info.get("scope", ""))
        gone = [event] if (event := request.get(CLIENT_GONE)) is not None else []
        limit_ms = decision.rule.hold_ms
        held_from = mono_ms()
        await until_any(None if limit_ms is None else limit_ms / 1000, released, self._stopping, *gone)
        entry.held_ms = mono_ms() - held_from
        if self._stopping.is_set():  # first: stopping sets every hold's event too (_wake)
            entry.hold_end = "stopped"
        elif released.is_set() or any(event.is_set() for event in gone):
            entry.hold_end = "released" if released.is_set() else "client gone"
        else:  # nobody released it in time: the answer goes on, and the report's faults served says so
            entry.hold_end = "ran out"
            entry.fault = f"hold {decision.hold!r} ran out after {limit_ms} ms: nothing released it"
        self._notify()


# --- standalone entry point -------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m qa.provider.mock",
        description="Serve the matrix-qa mock model provider (OpenAI chat completions and responses, Anthropic "
                    "messages)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose a free port")
    parser.add_argument(
        "--rules", action="append", default=[], type=Path, metavar="FILE", help="rule file (repeatable)"
    )
    parser.add_argument("--no-builtins", action="store_true", help="do not append the built-in rules")
    parser.add_argument("--model", default="mock-model")
    parser.add_argument("--api-key", default=None, help="require this key (a bearer token; x-api-key for Anthropic)")
    parser.add_argument("--fallback-text", default=DEFAULT_FALLBACK_TEXT)
    parser.add_argument("--journal", type=Path, default=None, help="write the request journal here on exit")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    try:
        rules = load_rule_files(args.rules)
        provider = MockProvider(
            rules,
            model=args.model,
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            include_builtins=not args.no_builtins,
            fallback_text=args.fallback_text,
        )
    except RuleFileError as err:
        print(err, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await provider.start()
    print(provider.base_url, flush=True)
    try:
        await stop.wait()
    finally:
        await provider.stop()
        if args.journal is not None:
            args.journal.write_text(json.dumps(provider.journal_as_json(), indent=2), encoding="utf-8")
        print(f"mock provider stopped after {len(provider.journal)} request(s)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:  # on the harness's loop: uvloop unless MATRIX_QA_HARNESS_LOOP=asyncio (qa.kernel.event_loop)
        return event_loop.run(_serve(args), event_loop.HARNESS_ENV, os.environ)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
