"""Model I/O through the official openai SDK, streaming. No lock is ever held in here: the caller's job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from qa.agent.config import ModelConfig


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class ModelReply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


def build_messages(system_prompt: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Turn transcript records into Chat Completions messages, oldest first."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for record in records:
        kind = record.get("kind")
        content = record.get("content")
        if kind == "user":
            messages.append({"role": "user", "content": str(content)})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": str(content)})
        elif kind == "tool" and isinstance(content, Mapping):
            # One record holds the call and its result, so a crash can never leave a call without an answer.
            call_id = str(content.get("callId") or "call")
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": str(content.get("name", "")), "arguments": str(content.get("arguments", ""))},
            }]})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": str(content.get("result", ""))})
        elif kind == "summary" and isinstance(content, Mapping):
            # Folded older turns (qa.agent.compaction): context the model still needs, not a new instruction.
            summary = f"Summary of the earlier conversation: {content.get('text', '')}"
            messages.append({"role": "system", "content": summary})
        elif kind == "memory":
            messages.append({"role": "system", "content": f"Notes from earlier turns: {content}"})
        elif kind == "notice":
            # Reactions and other room happenings reach the model as context, not as instructions.
            messages.append({"role": "user", "content": f"[notice] {content}"})
    return messages


WARM_UP_TIMEOUT_S = 5.0


class ModelClient:
    def __init__(self, config: ModelConfig, api_key: str) -> None:
        self._config = config
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "unset",
            timeout=config.timeout_s,
            max_retries=config.max_retries,
        )

    async def warm_up(self) -> str | None:
        """Open the connection and load the SDK's lazy parts before the first message needs them: the first
        request otherwise pays ~35 ms of set-up inside a user's reply. Returns the error, if any; a server
        without /models is still a working chat endpoint, so a failure here is only reported."""
        try:
            await asyncio.wait_for(self._client.models.list(), WARM_UP_TIMEOUT_S)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelReply:
        kwargs: dict[str, Any] = {"model": self._config.model, "messages": messages, "stream": True}
        if tools:
            kwargs["tools"] = tools
        stream = await self._client.chat.completions.create(**kwargs)
        reply = ModelReply()
        parts: list[str] = []
        calls: dict[int, ToolCall] = {}
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            if delta.content:
                parts.append(delta.content)
            for call in delta.tool_calls or []:
                slot = calls.setdefault(call.index, ToolCall(id="", name="", arguments=""))
                if call.id:
                    slot.id = call.id
                if call.function and call.function.name:
                    slot.name += call.function.name
                if call.function and call.function.arguments:
                    slot.arguments += call.function.arguments
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
        reply.text = "".join(parts)
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        return reply

    async def close(self) -> None:
        await self._client.close()
