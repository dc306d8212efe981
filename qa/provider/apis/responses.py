"""OpenAI Responses API (`POST /v1/responses`) for the mock provider: `input` (a string, or items: messages with
`input_text` / `input_image` parts, `function_call`, `function_call_output`), `instructions`,
`previous_response_id`, tools; the answer plain and streamed as semantic events (`response.created`,
`response.output_item.added`, `response.content_part.added`, `response.output_text.delta` … `response.completed`,
no `[DONE]`), function calls as `function_call` output items; OpenAI's error shape. Pure: no I/O.

`previous_response_id` is looked up by the provider, which keeps every stored answer's conversation
(ParsedRequest.stored); this module only reads and writes the wire format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qa.provider.apis.base import (
    AnswerContext,
    ParsedRequest,
    Usage,
    bad_request,
    common_content,
    finish_from,
    tool_call,
)
from qa.provider.apis.chat import openai_error_body
from qa.provider.rules import ErrorReply, Reply

_TEXT_PARTS = ("input_text", "output_text", "text")


def _item_message(item: Mapping[str, Any], where: str) -> dict[str, Any] | ErrorReply:
    role, content = item.get("role"), item.get("content")
    if not isinstance(role, str):
        return bad_request(f"Invalid '{where}.role': expected a string.", param=f"{where}.role", code="invalid_type")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        return bad_request(f"Invalid type for '{where}.content': expected a string or an array of content parts.",
                           param=f"{where}.content", code="invalid_type")
    texts, images = [], []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "input_image" and isinstance(part.get("image_url"), str):
            images.append(part["image_url"])
    return {"role": role, "content": common_content(texts, images)}


def _output_text(output: Any) -> str:
    """A `function_call_output`'s output: a string, or content parts of which the text ones count."""
    if isinstance(output, list):
        return "\n".join(str(p.get("text", "")) for p in output if isinstance(p, Mapping) and p.get("type")
                         in _TEXT_PARTS)
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output)


def _item(item: Any, where: str) -> dict[str, Any] | ErrorReply | None:
    """One input item in the common view; None for items the model does not read as text (reasoning, references)."""
    if not isinstance(item, Mapping):
        return bad_request(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
    kind = item.get("type", "message")
    if kind == "message":
        return _item_message(item, where)
    if kind == "function_call":
        call = tool_call(str(item.get("call_id", "")), str(item.get("name", "")), str(item.get("arguments", "")))
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = _output_text(item.get("output"))
        return {"role": "tool", "tool_call_id": str(item.get("call_id", "")), "content": output}
    return None


def _input(value: Any) -> tuple[list[dict[str, Any]], ErrorReply | None]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}], None
    if not isinstance(value, list):
        return [], bad_request("Invalid type for 'input': expected a string or an array of input items.",
                               param="input", code="invalid_type")
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        item = _item(raw, f"input[{i}]")
        if isinstance(item, ErrorReply):
            return messages, item
        if item is not None:
            messages.append(item)
    return messages, None


def _check(body: dict[str, Any]) -> ErrorReply | None:
    if "model" not in body:
        return bad_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(body["model"], str):
        return bad_request("Invalid type for 'model': expected a string.", param="model", code="invalid_type")
    if "input" not in body and body.get("previous_response_id") is None:
        return bad_request("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    for name, kind, types in (("instructions", "a string", (str,)), ("previous_response_id", "a string", (str,)),
                              ("stream", "a boolean", (bool,)), ("store", "a boolean", (bool,)),
                              ("tools", "an array", (list,))):
        if body.get(name) is not None and not isinstance(body[name], types):
            return bad_request(f"Invalid type for '{name}': expected {kind}.", param=name, code="invalid_type")
    return None


def output_items(reply: Reply, tag: str) -> list[dict[str, Any]]:
    items = []
    if reply.text is not None:
        items.append(_message_item(tag, reply.text, "completed"))
    items += [_call_item(tag, i, c.id, c.name, c.arguments, "completed") for i, c in enumerate(reply.tool_calls)]
    return items


def _message_item(tag: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": f"msg_{tag}", "type": "message", "status": status, "role": "assistant", "content": content}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(tag: str, index: int, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": f"fc_{tag}_{index}", "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}


class ResponsesApi:
    name = "responses"
    path = "responses"

    def parse(self, body: Any) -> tuple[ParsedRequest | None, ErrorReply | None]:
        if not isinstance(body, dict):
            return None, bad_request("The request body must be a JSON object.", code="invalid_type")
        problem = _check(body)
        messages, bad_input = _input(body["input"]) if "input" in body else ([], None)
        tools = body.get("tools")
        parsed = ParsedRequest(
            api=self.name, model=body.get("model") if isinstance(body.get("model"), str) else None,
            stream=body.get("stream") is True, messages=messages,
            raw_tools=list(tools) if isinstance(tools, list) else [],
            system=body.get("instructions") if isinstance(body.get("instructions"), str) else None,
            previous_response_id=body.get("previous_response_id") if isinstance(body.get("previous_response_id"),
                                                                                str) else None,
            store=body.get("store") is not False)
        return parsed, problem or bad_input

    def parse_error(self) -> ErrorReply:
        return bad_request("We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.")

    def unknown_previous(self, response_id: str) -> ErrorReply:
        return ErrorReply(400, f"Previous response with id '{response_id}' not found.", "invalid_request_error",
                          code="previous_response_not_found", param="previous_response_id")

    def error_body(self, error: ErrorReply) -> dict[str, Any]:
        return openai_error_body(error)

    def call_id_prefix(self, number: str) -> str:
        return f"call_mock{number}"

    def response_id(self, tag: str) -> str | None:
        return f"resp_{tag}"

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {"input_tokens": usage.input, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage.output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.input + usage.output}

    def response(self, ctx: AnswerContext, status: str, output: list[dict[str, Any]],
                 finish: str | None = None) -> dict[str, Any]:
        """The response object, as the plain answer and the stream's lifecycle events carry it."""
        request = ctx.request
        incomplete = status == "completed" and finish == "length"
        return {"id": self.response_id(ctx.tag), "object": "response", "created_at": ctx.created,
                "status": "incomplete" if incomplete else status, "background": False, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                "instructions": request.system, "max_output_tokens": None, "model": ctx.model, "output": output,
                "parallel_tool_calls": True, "previous_response_id": request.previous_response_id,
                "reasoning": {"effort": None, "summary": None}, "store": request.store, "temperature": 1.0,
                "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": request.raw_tools,
                "top_p": 1.0, "truncation": "disabled",
                "usage": self.usage(ctx.usage) if status == "completed" else None, "metadata": {}}

    def answer(self, reply: Reply, ctx: AnswerContext) -> dict[str, Any]:
        return self.response(ctx, "completed", output_items(reply, ctx.tag), finish_from(reply, ctx))

    def stream(self, ctx: AnswerContext) -> ResponsesStream:
        return ResponsesStream(self, ctx)

    def read_answer(self, body: Any) -> dict[str, Any]:
        """A live plain answer as the cassette keeps it: text, tool calls, finish reason, usage."""
        output = body.get("output") if isinstance(body, dict) else None
        items = [i for i in output or [] if isinstance(i, dict)]
        messages = [i for i in items if i.get("type") == "message"]
        text = "".join(str(p.get("text", "")) for m in messages for p in m.get("content") or []
                       if isinstance(p, dict) and p.get("type") == "output_text") if messages else None
        calls = [{"id": i.get("call_id", ""), "name": i.get("name", ""), "arguments": i.get("arguments", "")}
                 for i in items if i.get("type") == "function_call"]
        out: dict[str, Any] = {"text": text, "tool_calls": calls,
                               "finish_reason": _finish(calls, body.get("status") if isinstance(body, dict) else None)}
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            out["usage"] = body["usage"]
        return out

    def event_reader(self) -> ResponsesEventReader:
        return ResponsesEventReader()


def _finish(calls: list[Any], status: Any) -> str:
    if calls:
        return "tool_calls"
    return "length" if status == "incomplete" else "stop"


class ResponsesStream:
    """The semantic events of one streamed response. Every event has its `sequence_number`; an output item is
    added, filled (text deltas, argument deltas) and marked done before the next one starts."""

    trailer = b""

    def __init__(self, api: ResponsesApi, ctx: AnswerContext) -> None:
        self.api = api
        self.ctx = ctx
        self.sequence = 0
        self.items: list[dict[str, Any]] = []  # the output so far, each item as it is when done
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.finish_reason: str | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()

    def start(self) -> list[bytes]:
        created = self.api.response(self.ctx, "in_progress", [])
        return [self.event("response.created", response=created),
                self.event("response.in_progress", response=created)]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        delta = chunk.get("delta") if isinstance(chunk.get("delta"), Mapping) else {}
        out = self._text(delta["content"]) if isinstance(delta.get("content"), str) else []
        for call in delta.get("tool_calls") or []:
            out += self._call(call)
        if chunk.get("finish_reason"):
            self.finish_reason = str(chunk["finish_reason"])
        return out

    def _place(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": len(self.items)}

    def _text(self, piece: str) -> list[bytes]:
        item = self.open
        out: list[bytes] = []
        if item is None or item["type"] != "message":
            out = self._close()
            item = self.open = _message_item(self.ctx.tag, "", "in_progress")
            out.append(self.event("response.output_item.added", output_index=len(self.items),
                                  item={**item, "content": []}))
            out.append(self.event("response.content_part.added", **self._place(item), content_index=0,
                                  part=_text_part("")))
        if piece:
            item["content"][0]["text"] += piece
            out.append(self.event("response.output_text.delta", **self._place(item), content_index=0, delta=piece,
                                  logprobs=[]))
        return out

    def _call(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
        if call.get("id"):  # a call's first delta: a new output item
            out = self._close()
            index = sum(1 for i in self.items if i["type"] == "function_call")
            self.open = _call_item(self.ctx.tag, index, str(call["id"]), str(function.get("name") or ""), "",
                                   "in_progress")
            out.append(self.event("response.output_item.added", output_index=len(self.items), item=dict(self.open)))
        item, piece = self.open, function.get("arguments")
        if piece and item is not None and item["type"] == "function_call":
            item["arguments"] += piece
            out.append(self.event("response.function_call_arguments.delta", **self._place(item), delta=piece))
        return out

    def _close(self) -> list[bytes]:
        item, self.open = self.open, None
        if not item:
            return []
        place = self._place(item)
        out: list[bytes] = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(self.event("response.output_text.done", **place, content_index=0, text=part["text"],
                                  logprobs=[]))
            out.append(self.event("response.content_part.done", **place, content_index=0, part=part))
        else:
            out.append(self.event("response.function_call_arguments.done", **place, name=item["name"],
                                  arguments=item["arguments"]))
        item = {**item, "status": "completed"}
        out.append(self.event("response.output_item.done", output_index=place["output_index"], item=item))
        self.items.append(item)
        return out

    def finish(self) -> list[bytes]:
        out = self._close()
        done = self.api.response(self.ctx, "completed", self.items, self.ctx.finish or self.finish_reason)
        kind = "response.incomplete" if done["status"] == "incomplete" else "response.completed"
        return [*out, self.event(kind, response=done)]

    def malformed(self) -> bytes:
        return b'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": "unterm\n\n'


class ResponsesEventReader:
    """A live Responses stream, event by event, as neutral chunks; the response id and usage on the side."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.usage: dict[str, Any] | None = None
        self.calls: dict[str, int] = {}  # function_call item id -> the call's index

    def read(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type")
        response = data.get("response") if isinstance(data.get("response"), Mapping) else {}
        if response.get("id"):
            self.response_id = str(response["id"])
        item = data.get("item") if isinstance(data.get("item"), Mapping) else {}
        if kind == "response.output_item.added" and item.get("type") == "message":
            return [{"delta": {"role": "assistant", "content": ""}}]
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            index = self.calls.setdefault(str(item.get("id")), len(self.calls))
            function = {"name": item.get("name", ""), "arguments": item.get("arguments") or ""}
            return [{"delta": {"tool_calls": [{"index": index, "id": item.get("call_id", ""), "type": "function",
                                               "function": function}]}}]
        if kind == "response.output_text.delta":
            return [{"delta": {"content": str(data.get("delta", ""))}}]
        if kind == "response.function_call_arguments.delta":
            index = self.calls.get(str(data.get("item_id")), 0)
            piece = str(data.get("delta", ""))
            return [{"delta": {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}}]
        if kind in ("response.completed", "response.incomplete"):
            self.usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
            return [{"delta": {}, "finish_reason": _finish(list(self.calls), response.get("status"))}]
        return []


RESPONSES = ResponsesApi()
