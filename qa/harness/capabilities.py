"""What a bot can do versus what a scenario needs: pure, so the skip decision is unit-tested without servers.

A scenario needs what it declares in `requires:` plus what its own steps and settings imply (a thread step needs
`threads`, a restart step needs `restart`, …), so a scenario author cannot forget one and have a foreign bot
fail for a reason that is not a bug. A bot has what its bot file claims in `capabilities:`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Capability = Literal["trace", "threads", "restart", "approvals", "e2ee", "reactions", "policy", "lock", "media",
                     "streaming", "verification", "membership", "hot-reload", "redactions", "markdown",
                     "exec-dir", "model", "agent-wording", "model-timeout", "appservice", "room-key-trace"]

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
    "exec-dir": "runs its exec tool's commands in $MATRIX_QA_EXEC_DIR (their working directory), where the harness "
                "sees the files a command made",
    "model": "answers prompts through a model (the mock provider's journal, rules, faults and tools); every bot "
             "file without a `say` template has it",
    "agent-wording": "words its notices as the embedded agent does (\"HTTP 500 after 3 attempts\", \"no answer in "
                     "time\"): an expect_reply `wording` is checked; without it the notice is judged by behaviour",
    "model-timeout": "gives up on a model request after the launch's timeout (bot.modelTimeout: "
                     "$MATRIX_QA_MODEL_TIMEOUT_S, template provider.timeout_s) rather than its own",
    "appservice": "is an application service (bot file `appservice:`, never claimed in `capabilities`): the "
                  "homeserver pushes it transactions through the harness, where `target: push` faults act",
    "room-key-trace": "traces `e2ee.room_key` {roomId, sender, sessionId} once it holds a room key sent to it "
                      "and its sync position is saved past the key, so the server will not send it again "
                      "(share_room_key waits for it; without it that wait is NOT CHECKED)",
}

# --- bots without a model: the say-able prompt ---------------------------------------------------------------
# A prompt is say-able when its whole body is this sentence around one marker: its only right answer is the
# marker, so a bot without a model is asked for the same answer with its bot file's `say` command instead
# (docs/bot-file.md, "Bots without a model"). Any other prompt needs a model to be answered.
SAYABLE = re.compile(r"reply with only this exact marker: (\{token[2-9]?\})")


def say_marker(body: str) -> str | None:
    """Pure: the marker placeholder (`{token2}`) a say-able prompt asks for, else None."""
    found = SAYABLE.fullmatch(body)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Need:
    capability: str
    why: str  # "requires:", or the step/setting that implies it


def needs(scenario: Any) -> list[Need]:
    """Every capability the scenario needs, each with the first reason found, in a stable order.

    The scenario says what its settings and steps imply (`implied_needs`): each `bot:` field and each step kind
    declares its own needs (qa.scenario.settings, qa.scenario.steps)."""
    found: dict[str, str] = {}
    for capability in getattr(scenario, "requires", None) or []:
        found.setdefault(capability, "requires:")
    for capability, why in scenario.implied_needs():
        found.setdefault(capability, why)
    return [Need(c, found[c]) for c in MEANING if c in found]


def missing(scenario: Any, capabilities: Iterable[str], mutations: Iterable[str] = (),
            accounts: Iterable[str] = (), registers: bool = False) -> list[Need]:
    """What the bot lacks: capabilities, then the named state mutations and the named accounts (beside its main
    one, "bot") its bot file does not offer. A bot that `registers` accounts itself may have any other name:
    whether it does is known only when its reply comes (the step then says whose it was)."""
    have = set(capabilities)
    lacking = [n for n in needs(scenario) if n.capability not in have]
    offered = set(mutations)
    for name, why in scenario.state_mutations():
        if name not in offered and all(n.capability != f"state mutation {name}" for n in lacking):
            lacking.append(Need(f"state mutation {name}", why))
    has_accounts = {"bot", *accounts}
    for name, why in getattr(scenario, "bot_accounts", lambda: [])():
        if not registers and name not in has_accounts and all(n.capability != f"account {name}" for n in lacking):
            lacking.append(Need(f"account {name}", why))
    return lacking


def skip_reason(bot_name: str, lacking: list[Need]) -> str | None:
    """The one line a skipped scenario shows; None when nothing is lacking."""
    if not lacking:
        return None
    parts = [f"'{n.capability}' ({n.why})" for n in lacking]
    return f"skipped: bot '{bot_name}' lacks {', '.join(parts)}"
