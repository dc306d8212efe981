"""Config without a restart: on SIGHUP the bot rereads its config file and applies what may change live.

What may change: the rooms' policy, the account's defaults, autoJoin and the DM rule, known bots. What may
not (where it logs in, its state dir, its model endpoint) needs a restart, so a reload that changes those is
refused whole and the running config stays. Either way one trace record says what happened:

  config.reload  {generation, ok, changed?: [field, ...], error?}
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from qa.agent.config import AgentConfig, load_agent_config
from qa.kernel.errors import ConfigError
from qa.kernel.trace import Trace

# Fields a running bot cannot take over without reconnecting or moving its state.
RESTART_ONLY = ("homeserver", "user_id", "password_file", "device_id", "state_dir", "trace_path", "model",
                "encryption")


def reload_problem(old: AgentConfig, new: AgentConfig) -> str | None:
    changed = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
    return f"needs a restart to change: {', '.join(changed)}" if changed else None


def changed_fields(old: AgentConfig, new: AgentConfig) -> list[str]:
    return [(f.alias or n) for n, f in AgentConfig.model_fields.items() if getattr(old, n) != getattr(new, n)]


def live_config(old: AgentConfig, new: AgentConfig) -> AgentConfig:
    """The config to run with after a reload. The test-only `staleReloadPolicy` (from the running config)
    keeps every room's policy as it was and takes only the new generation: the bug of a bot that caches."""
    if old.stale_reload_policy:
        return old.model_copy(update={"config_generation": new.config_generation})
    return new


def reload_once(path: Path, current: AgentConfig, trace: Trace) -> AgentConfig:
    """Read `path` again; returns the config to run with (the current one when the new one is refused)."""
    try:
        new = load_agent_config(path)
    except ConfigError as exc:
        trace.emit("config.reload", generation=None, ok=False, error=str(exc))
        return current
    problem = reload_problem(current, new)
    if problem:
        trace.emit("config.reload", generation=new.config_generation, ok=False, error=problem)
        return current
    trace.emit("config.reload", generation=new.config_generation, ok=True, changed=changed_fields(current, new))
    return live_config(current, new)


def install(path: Path, bot: Any, trace: Trace) -> None:
    """SIGHUP -> reload, applied between two events of the sync loop (the loop reads `bot.config` each time)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: bot.reconfigure(reload_once(path, bot.config, trace)))
