"""What a Python bot's first model call costs in a process forked after a fork server's preload (issue 29).

    python bench/first_call.py MODE [--path DIR] [PRELOAD ...]
    MODE: responses-stream | responses-plain | chat | anthropic-stream | anthropic-plain

As qa.harness.zygote does: PRELOAD entries (`module` or `module:function`, DIR first on sys.path) are imported in
this process with the collector off, then frozen; a child is forked and makes the call twice against a canned
model API (this script with `--serve`, in its own process), through the async SDK client a bot uses. Prints the
preload's CPU, the child's first and second call's CPU and how many modules the first call imported. Pair it:
the same MODE without and with the warm-up entry, in turn (e.g. tests/bots/responses_reply_bot.py's `warm_up`).
Not a test: nothing here is asserted.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "output": [],
            "status": "in_progress", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "text": {"format": {"type": "text"}}}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "hi", "annotations": [], "logprobs": []}]}
DONE = {**RESPONSE, "status": "completed", "output": [MESSAGE],
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}
ANTHROPIC = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0}}
CHAT = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def responses_events() -> list[tuple[str, dict[str, Any]]]:
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    at = {"output_index": 0, "item_id": "msg_1", "content_index": 0}
    events = [("response.created", {"response": RESPONSE}), ("response.in_progress", {"response": RESPONSE}),
              ("response.output_item.added", {"output_index": 0,
                                              "item": {**MESSAGE, "status": "in_progress", "content": []}}),
              ("response.content_part.added", {**at, "part": part}),
              ("response.output_text.delta", {**at, "delta": "hi", "logprobs": []}),
              ("response.output_text.done", {**at, "text": "hi", "logprobs": []}),
              ("response.content_part.done", {**at, "part": {**part, "text": "hi"}}),
              ("response.output_item.done", {"output_index": 0, "item": MESSAGE}),
              ("response.completed", {"response": DONE})]
    return [(kind, {"type": kind, **fields, "sequence_number": n}) for n, (kind, fields) in enumerate(events)]


def anthropic_events() -> list[tuple[str, dict[str, Any]]]:
    events = [("message_start", {"message": ANTHROPIC}),
              ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
              ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
              ("content_block_stop", {"index": 0}),
              ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 1}}),
              ("message_stop", {})]
    return [(kind, {"type": kind, **fields}) for kind, fields in events]


class CannedApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path.endswith("/responses"):
            sse, plain = responses_events(), DONE
        elif self.path.endswith("/messages"):
            sse = anthropic_events()
            plain = {**ANTHROPIC, "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn"}
        else:
            sse, plain = [], CHAT
        if body.get("stream") and sse:
            data = b"".join(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode() for kind, event in sse)
            content_type = "text/event-stream"
        else:
            data, content_type = json.dumps(plain).encode(), "application/json"
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedApi)
    print(server.server_port, flush=True)
    server.serve_forever()


async def call(mode: str, client: Any) -> str:
    responses = {"model": "m", "instructions": "x",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": "t"}]}]}
    messages = {"model": "m", "max_tokens": 10, "system": "x", "messages": [{"role": "user", "content": "t"}]}
    if mode == "responses-stream":
        async with client.responses.stream(**responses) as events:
            return str((await events.get_final_response()).output_text)
    if mode == "responses-plain":
        return str((await client.responses.create(**responses)).output_text)
    if mode == "chat":
        answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "t"}])
        return str(answer.choices[0].message.content)
    if mode == "anthropic-stream":
        async with client.messages.stream(**messages) as events:
            return str((await events.get_final_message()).content[0].text)
    return str((await client.messages.create(**messages)).content[0].text)


async def twice(mode: str, port: int) -> list[tuple[float, int, str]]:
    if mode.startswith("anthropic"):
        import anthropic

        client: Any = anthropic.AsyncAnthropic(api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    else:
        import openai

        client = openai.AsyncOpenAI(api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    seen = []
    for _ in range(2):
        modules, started = len(sys.modules), time.process_time()
        text = await call(mode, client)
        seen.append((time.process_time() - started, len(sys.modules) - modules, text))
    await client.close()
    return seen


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        serve()
        return 0
    mode, entries = argv[0], argv[1:]
    if entries[:1] == ["--path"]:
        sys.path.insert(0, entries[1])
        entries = entries[2:]
    api = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert api.stdout is not None
        port = int(api.stdout.readline())
        started = time.process_time()
        gc.disable()
        for entry in entries:
            module, _, function = entry.partition(":")
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        gc.collect()
        gc.freeze()
        gc.enable()
        preload_cpu = time.process_time() - started
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                (first, new, _), (second, _, text) = asyncio.run(twice(mode, port))
                print(f"{mode} preload={preload_cpu:.3f}s first={first:.3f}s ({new} new modules) "
                      f"second={second:.3f}s answer={text!r}", flush=True)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        api.kill()
        api.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
