"""A stand-in for a live OpenAI-compatible model, for the record/replay tests: small, and sharing no code with
matrix-qa's mock provider (qa.provider.mock), so a recording made against it proves the proxy speaks the wire
format of someone else's server.

It wants a bearer key, streams its answers in small pieces with a little time between them, and answers the
phrasings the scenario library uses: "reply with only this exact marker: X", "slow reply with marker: X" (after
1.5 s), "run this exact command: CMD" (an `exec` tool call when the tool is offered), a tool result (its text).
`prompts` counts what it was asked, so a test can prove the replay never reached it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

_MARKER = re.compile(r"(?i)(slow )?reply with (?:only this exact )?marker:\s*(\S+)")
_COMMAND = re.compile(r"(?i)run this exact command:[ \t]*([^\n]*\S)")
PIECE = 4
PIECE_GAP_S = 0.01
SLOW_S = 1.5


class OpenAIStandIn:
    def __init__(self, key: str, model: str = "standin-1") -> None:
        self.key = key
        self.model = model
        self.prompts: list[list[dict[str, Any]]] = []
        self.auth_seen: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        self.auth_seen.append(header)
        return header == f"Bearer {self.key}"

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                              "owned_by": "standin"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        messages = body["messages"]
        self.prompts.append(messages)
        text, call, delay = answer(messages, [t["function"]["name"] for t in body.get("tools") or []])
        if delay:
            await asyncio.sleep(delay)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if call:
                message["tool_calls"] = [{"id": "call_standin_1", "type": "function", "function": call}]
            return web.json_response({"id": "cmpl-standin", "object": "chat.completion", "created": int(time.time()),
                                      "model": self.model, "choices": [{
                                          "index": 0, "message": message,
                                          "finish_reason": "tool_calls" if call else "stop"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {"id": "cmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(PIECE_GAP_S)

        if call:
            await send({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_standin_1", "type": "function",
                                                             "function": {"name": call["name"], "arguments": ""}}]})
            args = call["arguments"]
            for i in range(0, len(args), PIECE * 4):
                await send({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + PIECE * 4]}}]})
            await send({}, "tool_calls")
        else:
            await send({"role": "assistant", "content": ""})
            for i in range(0, len(text), PIECE):
                await send({"content": text[i:i + PIECE]})
            await send({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def answer(messages: list[dict[str, Any]], tools: list[str]) -> tuple[str, dict[str, str] | None, float]:
    """(text, tool call or None, seconds to think) for a conversation."""
    last = messages[-1]
    if last.get("role") == "tool":
        return str(last.get("content") or ""), None, 0.0
    latest = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
    command = _COMMAND.search(latest)
    if command and "exec" in tools:
        return "", {"name": "exec", "arguments": json.dumps({"command": command.group(1)})}, 0.0
    marker = _MARKER.search(latest)
    if marker:
        return marker.group(2).strip("`'\".,!*"), None, SLOW_S if marker.group(1) else 0.0
    return "I have nothing to add.", None, 0.0


async def _serve(port: int, key: str) -> None:
    standin = OpenAIStandIn(key)
    app = web.Application()
    app.router.add_get("/v1/models", standin._models)
    app.router.add_post("/v1/chat/completions", standin._chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"stand-in model at http://127.0.0.1:{port}/v1 (model standin-1)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # How fixtures/cassettes were made (see its README.md): serve, then record through matrix-qa.
    import argparse
    import os

    parser = argparse.ArgumentParser(description="an OpenAI-compatible stand-in model for record/replay tests")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, os.environ["OPENAI_API_KEY"]))
