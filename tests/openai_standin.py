"""A stand-in for a live model, for the record/replay tests: small, and sharing no code with matrix-qa's mock
provider (qa.provider.mock, qa.provider.apis), so a recording made against it proves the proxy speaks the wire
format of someone else's server. It speaks three APIs at once: OpenAI Chat Completions (`/v1/chat/completions`),
OpenAI Responses (`/v1/responses`, with its own store for `previous_response_id`) and Anthropic Messages
(`/v1/messages`).

It wants the key (a bearer token for OpenAI's APIs, `x-api-key` and an `anthropic-version` for Anthropic's),
streams its answers in small pieces with a little time between them, and answers the phrasings the scenario
library uses: "reply with only this exact marker: X", "slow reply with marker: X" (after 1.5 s), "run this exact
command: CMD" (an `exec` tool call when the tool is offered), a tool result (its text). `prompts` counts what it
was asked, so a test can prove the replay never reached it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
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
        self.apis_seen: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._stored: dict[str, list[dict[str, Any]]] = {}  # Responses: response id -> conversation
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/messages", self._messages)

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
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

    def _anthropic_authorized(self, request: web.Request) -> bool:
        key = request.headers.get("x-api-key", "")
        self.auth_seen.append(f"x-api-key {key}")
        return key == self.key and "anthropic-version" in request.headers

    async def _models(self, request: web.Request) -> web.Response:
        # Either API's key: a live run checks its endpoint with a model list before anything starts.
        if not (self._authorized(request) or self._anthropic_authorized(request)):
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                              "owned_by": "standin"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        messages = body["messages"]
        self.prompts.append(messages)
        self.apis_seen.append("chat")
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


    # --- OpenAI Responses -------------------------------------------------------------------------------

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": {"message": "bad key", "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        history = list(self._stored.get(body.get("previous_response_id") or "", []))
        raw = body.get("input", [])
        for item in [{"role": "user", "content": raw}] if isinstance(raw, str) else raw:
            if item.get("type") == "function_call_output":
                history.append({"role": "tool", "content": item.get("output", "")})
            elif item.get("type", "message") == "message":
                content = item["content"]
                text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
                history.append({"role": item["role"], "content": text})
        self.prompts.append(history)
        self.apis_seen.append("responses")
        text, call, delay = answer(history, [t.get("name", "") for t in body.get("tools") or []])
        if delay:
            await asyncio.sleep(delay)
        rid = f"resp_standin_{next(self._ids)}"
        if call:
            item = {"type": "function_call", "id": f"fc_{rid}", "call_id": f"call_{rid}", "status": "completed", **call}
            self._stored[rid] = [*history, {"role": "assistant", "content": ""}]
        else:
            item = {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
            self._stored[rid] = [*history, {"role": "assistant", "content": text}]
        done = {"id": rid, "object": "response", "created_at": int(time.time()), "model": self.model,
                "status": "completed", "output": [item], "usage": {"input_tokens": 5, "output_tokens": 2,
                                                                   "total_tokens": 7}}
        if not body.get("stream"):
            return web.json_response(done)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        send = _event_sender(response, numbered=True)
        await send("response.created", response={**done, "status": "in_progress", "output": [], "usage": None})
        where = {"item_id": item["id"], "output_index": 0}
        if call:
            await send("response.output_item.added", output_index=0, item={**item, "arguments": ""})
            for i in range(0, len(call["arguments"]), PIECE * 4):
                await send("response.function_call_arguments.delta", **where, delta=call["arguments"][i:i + PIECE * 4])
            await send("response.function_call_arguments.done", **where, arguments=call["arguments"])
        else:
            await send("response.output_item.added", output_index=0, item={**item, "content": []})
            await send("response.content_part.added", **where, content_index=0,
                       part={"type": "output_text", "text": "", "annotations": []})
            for i in range(0, len(text), PIECE):
                await send("response.output_text.delta", **where, content_index=0, delta=text[i:i + PIECE])
            await send("response.output_text.done", **where, content_index=0, text=text)
        await send("response.output_item.done", output_index=0, item=item)
        await send("response.completed", response=done)
        await response.write_eof()
        return response

    # --- Anthropic Messages ----------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if not self._anthropic_authorized(request):
            return web.json_response({"type": "error", "error": {"type": "authentication_error",
                                                                  "message": "invalid x-api-key"}}, status=401)
        body = await request.json()
        history = [{"role": "system", "content": body["system"]}] if isinstance(body.get("system"), str) else []
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, str):
                history.append({"role": message["role"], "content": content})
                continue
            for block in content:
                if block["type"] == "tool_result":
                    result = block.get("content", "")
                    history.append({"role": "tool", "content": result if isinstance(result, str)
                                    else " ".join(b.get("text", "") for b in result)})
                elif block["type"] == "text":
                    history.append({"role": message["role"], "content": block["text"]})
        self.prompts.append(history)
        self.apis_seen.append("anthropic")
        text, call, delay = answer(history, [t.get("name", "") for t in body.get("tools") or []])
        if delay:
            await asyncio.sleep(delay)
        mid = f"msg_standin_{next(self._ids)}"
        block = {"type": "tool_use", "id": f"toolu_{mid}", "name": call["name"],
                 "input": json.loads(call["arguments"])} if call else {"type": "text", "text": text}
        stop = "tool_use" if call else "end_turn"
        message = {"id": mid, "type": "message", "role": "assistant", "model": self.model, "content": [block],
                   "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}}
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        send = _event_sender(response)
        await send("message_start", message={**message, "content": [], "stop_reason": None,
                                             "usage": {"input_tokens": 5, "output_tokens": 1}})
        if call:
            await send("content_block_start", index=0, content_block={**block, "input": {}})
            for i in range(0, len(call["arguments"]), PIECE * 4):
                await send("content_block_delta", index=0,
                           delta={"type": "input_json_delta", "partial_json": call["arguments"][i:i + PIECE * 4]})
        else:
            await send("content_block_start", index=0, content_block={"type": "text", "text": ""})
            await send("ping")
            for i in range(0, len(text), PIECE):
                await send("content_block_delta", index=0, delta={"type": "text_delta", "text": text[i:i + PIECE]})
        await send("content_block_stop", index=0)
        await send("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage={"output_tokens": 2})
        await send("message_stop")
        await response.write_eof()
        return response


def _event_sender(response: web.StreamResponse, numbered: bool = False) -> Callable[..., Awaitable[None]]:
    """Server-sent events as both APIs send them: `event:` names the type, `data:` repeats it (the Responses API
    numbers every event)."""
    numbers = itertools.count()

    async def send(kind: str, **data: Any) -> None:
        head = {"type": kind, "sequence_number": next(numbers)} if numbered else {"type": kind}
        await response.write(f"event: {kind}\ndata: {json.dumps({**head, **data})}\n\n".encode())
        await asyncio.sleep(PIECE_GAP_S)

    return send


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
    standin.routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"stand-in model at http://127.0.0.1:{port}/v1 (model standin-1; chat completions, responses and "
          "anthropic messages)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # How fixtures/cassettes were made (see its README.md): serve, then record through matrix-qa.
    import argparse
    import os

    parser = argparse.ArgumentParser(description="a stand-in model (OpenAI chat and responses, Anthropic messages) "
                                                 "for record/replay tests")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    asyncio.run(_serve(args.port, os.environ["OPENAI_API_KEY"]))
