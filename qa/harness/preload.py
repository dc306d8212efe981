"""Where a bot file's `fork_server.preload` entries are imported from, and the check, before anything starts, that
each can be found there (docs/bot-file.md "fork_server").

The fork server (qa.harness.zygote) imports the entries as the bot's own `python -m MODULE` would find them: the
bot's working directory first on sys.path, then the interpreter's path. A module beside the bot file is found the
same way by both. The directory is known for the run only when the bot file's `cwd` uses no per-scenario
placeholder; otherwise the preload sees the interpreter's path alone (installed packages).

No pydantic here: qa.harness.early_fork_server computes the built-in agent's arguments with this before the run
imports anything heavy.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qa.kernel.errors import ConfigError

if TYPE_CHECKING:
    from qa.harness.botfile import BotFile

# Filled the same for every scenario of a run; any other placeholder makes the directory a scenario's.
_RUN_LEVEL = {"{python}": sys.executable}


def preload_dir(cwd: str | None, bot_dir: Path) -> Path | None:
    """Pure: the bot's working directory for the whole run (as qa.harness.launch resolves it), or None when it
    depends on a scenario (`{state_dir}`, `{scenario}`, …). Absolute: sys.path entries must not move with the fork
    server's own directory."""
    if cwd is None:
        return bot_dir.resolve()
    for placeholder, value in {**_RUN_LEVEL, "{bot_dir}": str(bot_dir)}.items():
        cwd = cwd.replace(placeholder, value)
    if "{" in cwd:
        return None
    return (bot_dir / cwd).resolve()


def unfound(entries: list[str], directory: Path | None) -> list[str]:
    """The entries whose top-level module cannot be found from `directory` (first) and this interpreter's path, as
    the fork server would look for it. Nothing is imported (a user's module runs only in the fork server); a
    submodule or a `:function` can only be told by importing, so the fork server reports those itself."""
    # sys.path[0] is our own script's folder (or working directory), where the fork server has the bot's; with
    # safe_path (-P, PYTHONSAFEPATH) neither puts one there.
    path = sys.path if sys.flags.safe_path else [*([str(directory)] if directory is not None else []), *sys.path[1:]]
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


def check_preload(bot: BotFile) -> None:
    """Before anything starts, for a run that forks its bots: every `fork_server.preload` entry's module can be
    found where the fork server will import it, so a typo or a module the preload cannot see is exit 2 naming the
    file and the entry instead of a fork server that dies beside the homeserver's boot."""
    if bot.fork_server is None:
        return
    directory = preload_dir(bot.cwd, bot.directory)
    for entry in unfound(list(bot.fork_server.preload), directory):
        where = f"the bot's folder {directory}" if directory is not None else \
            "its working directory (cwd depends on the scenario, so the preload sees installed packages only)"
        raise ConfigError(f"{bot.source}: fork_server.preload: {entry!r}: no module "
                          f"{entry.partition(':')[0].split('.')[0]!r} in {where} nor on Python's path")
