"""The model APIs the mock, replay and recording providers speak, one module each behind one interface
(qa.provider.apis.base.ModelApi): OpenAI Chat Completions, OpenAI Responses, Anthropic Messages."""

from __future__ import annotations

from collections.abc import Mapping

from qa.provider.apis.anthropic import ANTHROPIC
from qa.provider.apis.base import ModelApi
from qa.provider.apis.chat import CHAT
from qa.provider.apis.responses import RESPONSES

APIS: dict[str, ModelApi] = {api.name: api for api in (CHAT, RESPONSES, ANTHROPIC)}
NAMES = tuple(APIS)
DEFAULT = CHAT.name


def for_path(path: str) -> ModelApi | None:
    """The API a request path (`…/v1/responses`, a scope's `/scope/x/v1/messages`) is a model request of."""
    return next((api for api in APIS.values() if path.endswith(f"/v1/{api.path}")), None)


def for_request(path: str, headers: Mapping[str, str]) -> ModelApi:
    """Whose error shape a request gets: its path's API, else Anthropic's for a client that sends the
    `anthropic-version` header (the SDK always does), else OpenAI's."""
    found = for_path(path)
    if found is not None:
        return found
    return ANTHROPIC if "anthropic-version" in headers else CHAT
