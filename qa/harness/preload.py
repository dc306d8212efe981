"""Where a bot file's `fork_server.preload` entries are imported from, and the check, before anything starts, that
the first can be found there (docs/bot-file.md "fork_server"; a later one may need what an earlier one ran).

The fork server (qa.harness.zygote) imports the entries as the bot's own `python -m MODULE` would find them: the
bot's working directory first on sys.path, then the interpreter's path. A module beside the bot file is found the
same way by both (unless the environment sets PYTHONSAFEPATH). The directory is known for the run only when the
bot file's `cwd` uses no per-scenario placeholder; otherwise the preload sees the interpreter's path alone
(installed packages).

No pydantic here: qa.harness.early_fork_server computes the built-in agent's arguments with this before the run
imports anything heavy.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from qa.harness.contract_env import inherited_env
from qa.kernel.errors import ConfigError

if TYPE_CHECKING:
    from qa.harness.botfile import BotFile

# Filled the same for every scenario of a run ({bot_dir} too); any other placeholder makes the directory a
# scenario's.
_RUN_LEVEL = {"python": sys.executable}
# qa.harness.botfile's _PLACEHOLDER_RE (a test keeps them equal): that module imports pydantic, this one must not.
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


def preload_dir(cwd: str | None, bot_dir: Path) -> Path | None:
    """Pure: the bot's working directory for the whole run (as qa.harness.launch resolves it), or None when it
    depends on a scenario (`{state_dir}`, `{scenario}`, …). Absolute: sys.path entries must not move with the fork
    server's own directory."""
    if cwd is None:
        return bot_dir.resolve()
    # Asked of the cwd as written, before {bot_dir} is filled in: a brace in the bot's folder's name, or one in the
    # cwd that is no placeholder (qa.harness.launch.fill leaves those as written), is part of a path.
    if any(name not in (*_RUN_LEVEL, "bot_dir") for name in _PLACEHOLDER_RE.findall(cwd)):
        return None
    for name, value in {**_RUN_LEVEL, "bot_dir": str(bot_dir)}.items():
        cwd = cwd.replace("{" + name + "}", value)
    return (bot_dir / cwd).resolve()


def unfound(entries: list[str], directory: Path | None, env: Mapping[str, str]) -> list[str]:
    """The entries whose top-level module cannot be found from `directory` (first) and this interpreter's path, as
    the fork server started with `env` would look for it. Nothing is imported (a user's module runs only in the
    fork server); a submodule or a `:function` can only be told by importing, so the fork server reports those
    itself."""
    # The fork server is a plain `python -m` (no -P, -I, -E): whether it puts the bot's folder first is its
    # environment's PYTHONSAFEPATH, not how this harness was started. Our own sys.path[0] (our script's folder or
    # working directory) is nothing it sees; the PYTHONPATH it gets is, even if we ignored ours (-E, -I).
    ours = sys.path if sys.flags.safe_path else sys.path[1:]
    first = [str(directory)] if directory is not None and not env.get("PYTHONSAFEPATH") else []
    path = [*first, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p), *ours]
    missing = []
    for entry in entries:
        top = entry.partition(":")[0].split(".")[0]
        if top in sys.modules or importlib.machinery.PathFinder.find_spec(top, path) is not None:
            continue
        # Built-in and frozen modules, and packages installed in editable mode through an import hook.
        others = (f for f in sys.meta_path if f is not importlib.machinery.PathFinder)
        if not any(_finds(finder, top) for finder in others):
            missing.append(entry)
    return missing


def _finds(finder: object, name: str) -> bool:
    find_spec = getattr(finder, "find_spec", None)
    try:
        return find_spec is not None and find_spec(name, None) is not None
    except Exception:  # a third-party import hook's bug must not fail the check: assume it finds the module
        return True


def check_preload(bot: BotFile, env: Mapping[str, str] | None = None) -> None:
    """Before anything starts, for a run that forks its bots: the FIRST `fork_server.preload` entry's module can be
    found where the fork server (started with `env`, by default what it inherits from us) will import it, so a typo
    or a module the preload cannot see is exit 2 naming the file and the entry instead of a fork server that dies
    beside the homeserver's boot. Only the first: the fork server imports the entries in order, and an entry's
    import may add to sys.path or install an import hook that finds a later one; a later entry found nowhere is the
    fork server's own exit 2 (qa.harness.fork_server), never refused here when the fork server would take it."""
    if bot.fork_server is None or not bot.fork_server.preload:
        return
    env = inherited_env(os.environ) if env is None else env
    directory = preload_dir(bot.cwd, bot.directory)
    for entry in unfound(list(bot.fork_server.preload)[:1], directory, env):
        if env.get("PYTHONSAFEPATH"):
            where = "the bot's folder, which PYTHONSAFEPATH keeps off the preload's path,"
        elif directory is not None:
            where = f"the bot's folder {directory}"
        else:
            where = "its working directory (cwd depends on the scenario, so the preload sees installed packages only)"
        raise ConfigError(f"{bot.source}: fork_server.preload: {entry!r}: no module "
                          f"{entry.partition(':')[0].split('.')[0]!r} in {where} nor on Python's path")
