"""What a bot can do versus what a scenario needs: pure, so the skip decision is unit-tested without servers.

A scenario needs what it declares in `requires:` plus what its own steps and settings imply (a thread step needs
`threads`, a restart step needs `restart`, …), so a scenario author cannot forget one and have a foreign bot
fail for a reason that is not a bug. A bot has what its bot file claims in `capabilities:`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Capability = Literal["trace", "threads", "restart", "approvals", "e2ee", "reactions", "policy", "lock", "media",
                     "streaming", "verification", "membership", "hot-reload", "redactions", "markdown"]

MEANING: dict[str, str] = {
    "trace": "writes the matrix-qa trace to $MATRIX_QA_TRACE_FILE (docs/trace-format.md)",
    "threads": "answers inside Matrix threads",
    "restart": "keeps its state in $MATRIX_QA_STATE_DIR across a restart or a crash",
    "approvals": "asks for exec approvals and takes decisions by reaction",
    "e2ee": "talks in end-to-end encrypted rooms",
    "reactions": "records reactions to its messages (trace `reaction` records)",
    "policy": "takes the scenario's bot: settings (requireMention, allowlist, allowBots, knownBots, threadReplies) "
              "from the launch",
    "lock": "keeps transcripts under a session write lock and traces its holds and model requests",
    "media": "takes attachments (m.image/m.audio/m.video/m.file), images to the model, and a mediaMaxBytes limit",
    "streaming": "streams answers as an edited draft (bot.streaming partial|quiet, toolProgress) from the launch",
    "verification": "takes part in to-device SAS verification, traces its SAS and outcome, and can share room "
                    "keys with verified devices only (bot.roomKeys)",
    "membership": "joins rooms it is invited to at run time (bot.autoJoin: always|allowlist|off, "
                  "autoJoinAllowlist) and stops serving a room it was kicked from",
    "hot-reload": "rereads its rendered config on SIGHUP and traces `config.reload` {generation, ok} "
                  "(template variable config_generation)",
    "redactions": "never answers a redaction (trace `inbound`, reason `redaction`) and records a removed reaction "
                  "in its session (trace `reaction.removed`)",
    "markdown": "sends the model's markdown as org.matrix.custom.html (formatted_body) beside the plain body",
}

_DEFAULT_POLICY = {"require_mention": True, "allow_bots": "off", "known_bots": [], "allowlist": None,
                   "dm_require_mention": False, "thread_replies": "inbound"}


@dataclass(frozen=True)
class Need:
    capability: str
    why: str  # "requires:", or the step/setting that implies it


def needs(scenario: Any) -> list[Need]:
    """Every capability the scenario needs, each with the first reason found, in a stable order."""
    found: dict[str, str] = {}

    def need(capability: str, why: str) -> None:
        found.setdefault(capability, why)

    for capability in getattr(scenario, "requires", None) or []:
        need(capability, "requires:")
    bot = scenario.bot
    if bot.encryption or any(spec.encrypted for spec in scenario.rooms.values()):
        need("e2ee", "encrypted room")
    for key, default in _DEFAULT_POLICY.items():
        if getattr(bot, key) != default:
            need("policy", f"bot.{_camel(key)}")
    if bot.session_write_lock is not None:
        need("lock", "bot.sessionWriteLock")
    if getattr(bot, "streaming", "off") != "off":
        need("streaming", "bot.streaming")
    if getattr(bot, "tool_progress", "on") != "on":
        need("streaming", "bot.toolProgress")
    limit = type(bot).model_fields.get("media_max_bytes")
    if limit is not None and bot.media_max_bytes != limit.default:
        need("media", "bot.mediaMaxBytes")
    if bot.room_keys != "all":
        need("verification", "bot.roomKeys")
    if bot.auto_join != "off" or bot.auto_join_allowlist:
        need("membership", "bot.autoJoin")
    for name, spec in scenario.rooms.items():
        if getattr(spec, "bot", None) is not None:
            need("policy", f"rooms.{name}.bot")
    if getattr(bot, "session_life", None) is not None:
        need("lock", "bot.sessionLife")
    for index, step in enumerate(scenario.steps, start=1):
        where = f"step {index} ({step.kind})"
        kind = step.kind
        if kind in ("restart_bot", "stop_bot", "start_bot", "mutate_bot_state"):
            need("restart", where)
        elif kind in ("approve", "expect_approval"):
            need("approvals", where)
            need("trace", where)
        elif kind in _E2EE_STEPS:
            for capability in _E2EE_STEPS[kind]:
                need(capability, where)
        elif kind in ("invite", "kick") and step.who == "bot":
            need("membership", where)
        elif kind == "set_bot_config":
            need("hot-reload", where)
            need("policy", where)
        elif kind == "expect_trace":
            need("trace", where)
            if str(step.type).startswith("lock."):
                need("lock", where)
        elif kind == "expect_reaction" and step.by != "bot":
            need("reactions", where)
            need("trace", where)
        elif kind == "send_media":
            need("media", where)
        elif kind == "expect_edits":
            need("streaming", where)
        elif kind == "expect_model_request" and getattr(step, "images", None) is not None:
            need("media", where)
        elif kind in ("redact", "expect_redaction"):
            need("redactions", where)
            if kind == "expect_redaction":
                need("trace", where)
        elif kind == "expect_reply":
            if getattr(step, "streamed", False):
                need("streaming", where)
            if getattr(step, "parts_min", None):
                need("trace", f"{where}: the parts of a split reply are listed in the trace (reply.parts)")
            if step.formatted_contains or step.formatted_excludes or step.formatted_safe:
                need("markdown", where)
        elif kind == "expect_no_reply" and step.control is None and step.quiet_window is None:
            need("trace", f"{where}: only the trace can prove this silence (no control message)")
        if getattr(step, "thread", None) or getattr(getattr(step, "control", None), "thread", None):
            need("threads", where)
    return [Need(c, found[c]) for c in MEANING if c in found]


# What the E2EE steps need: verification evidence and the bot's device ids come from its trace.
_E2EE_STEPS: dict[str, tuple[str, ...]] = {
    "verify": ("e2ee", "verification", "trace"), "expect_verified": ("e2ee", "verification", "trace"),
    "login_device": ("e2ee",), "expect_encrypted": ("e2ee",), "send_verification_request": ("e2ee",),
    "delete_bot_device": ("e2ee", "trace"), "expect_bot_device": ("e2ee", "trace"),
}


def missing(scenario: Any, capabilities: Iterable[str], mutations: Iterable[str] = ()) -> list[Need]:
    """What the bot lacks: capabilities, then the named state mutations its bot file does not offer."""
    have = set(capabilities)
    lacking = [n for n in needs(scenario) if n.capability not in have]
    offered = set(mutations)
    for index, step in enumerate(scenario.steps, start=1):
        name = getattr(step, "mutation", None) if step.kind == "mutate_bot_state" else None
        if name is not None and name not in offered and all(n.capability != f"state mutation {name}" for n in lacking):
            lacking.append(Need(f"state mutation {name}", f"step {index} (mutate_bot_state)"))
    return lacking


def skip_reason(bot_name: str, lacking: list[Need]) -> str | None:
    """The one line a skipped scenario shows; None when nothing is lacking."""
    if not lacking:
        return None
    parts = [f"'{n.capability}' ({n.why})" for n in lacking]
    return f"skipped: bot '{bot_name}' lacks {', '.join(parts)}"


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)
