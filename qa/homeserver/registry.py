"""The homeserver backends a run can use, one entry each: its name, its command-line options, the checks of
those options, its preflight, how it starts and its last-resort cleanup.

Each backend registers itself from its own small module (qa/homeserver/backends/<name>.py: cheap to import,
the server's own code is imported only when it starts); BUILTIN names them, in the order their options are
shown and checked. The CLI builds `--homeserver` and every backend's options from here, and the
run asks here what to check, what to start and what to clean up: neither names a backend. A backend outside
this package (a test's stand-in, a plugin) calls `register` itself. Adding one, e.g. an image on Docker:

    # qa/homeserver/backends/dendrite.py, and its name in BUILTIN
    def _create(request: StartRequest) -> Homeserver:
        from qa.homeserver.dendrite import DendriteHomeserver  # a ContainerHomeserver (qa.homeserver.container)
        return DendriteHomeserver(request.log_dir, image=request.settings.get("dendrite_image") or IMAGE,
                                  port=request.port)

    BACKEND = register(Backend(name="dendrite", create=_create, choice="dendrite (a Docker container)",
                               options=(Option("--dendrite-image", metavar="IMAGE", help="its image"),)))
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.kernel.errors import ConfigError

if TYPE_CHECKING:
    from qa.homeserver.base import Homeserver

# The built-in backends, each registered by qa/homeserver/backends/<name>.py, in the order their options are
# shown and checked, whichever of them was imported first; backends registered from elsewhere follow.
BUILTIN = ("synapse", "external", "tuwunel", "image")

# A backend's option values, by argparse dest (RunOptions.homeserver_settings): None where not given.
Settings = Mapping[str, Any]


@dataclass(frozen=True)
class Option:
    """One command-line option of a backend; `argparse` holds any further keywords of `add_argument`."""

    flag: str
    help: str
    metavar: str | None = None
    argparse: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class StartRequest:
    """What a backend builds its homeserver from."""

    settings: Settings
    port: int | None  # --homeserver-port; None: a free one
    work_dir: Path  # the run's scratch directory, removed after the run: secrets may live there
    log_dir: Path  # in the artifacts
    env: Mapping[str, str]
    # The bot file has `appservice:`: a backend that can load the harness's registration at boot does so.
    appservice: bool = False


def _nothing_to_check(settings: Settings, env: Mapping[str, str]) -> list[str]:
    return []


def _nothing_to_clean() -> None:
    return None


@dataclass(frozen=True)
class Backend:
    name: str
    # Builds the homeserver (not started yet: the run starts it, and stops it whatever happens).
    create: Callable[[StartRequest], Homeserver]
    options: tuple[Option, ...] = ()
    # How `--homeserver NAME`'s help describes it; None: not chosen by --homeserver (see chosen_by).
    choice: str | None = None
    # The dest of its option that chooses it when --homeserver is not given (an external server's URL).
    chosen_by: str | None = None
    default: bool = False
    # Its options given to a run that uses another backend (`in_use`): the flags to name in the usage error,
    # or a ConfigError of its own. None: every option of it that was given.
    misplaced: Callable[[Settings, str], list[str]] | None = None
    # Usage and environment checks before anything starts (exit 2); returns the secrets to redact from then on.
    preflight: Callable[[Settings, Mapping[str, str]], list[str]] = _nothing_to_check
    # Synchronous, idempotent: nothing it started outlives the process (a second Ctrl-C, interpreter exit).
    last_resort: Callable[[], None] = _nothing_to_clean


_REGISTERED: dict[str, Backend] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    if backend.name in _REGISTERED:
        raise ValueError(f"a homeserver backend named {backend.name!r} is already registered")
    _REGISTERED[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)


def backends() -> list[Backend]:
    """Every backend: the built-in ones in BUILTIN's order, then the others in registration order."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in BUILTIN:
            importlib.import_module(f"qa.homeserver.backends.{name}")
    rank = {name: i for i, name in enumerate(BUILTIN)}
    return sorted(_REGISTERED.values(), key=lambda b: rank.get(b.name, len(rank)))


def get(name: str) -> Backend:
    found = next((b for b in backends() if b.name == name), None)
    if found is None:
        raise ConfigError(f"--homeserver {name!r} is not supported; use {_ways()}")
    return found


def choose(explicit: str | None, settings: Settings) -> str:
    """--homeserver NAME if given; else the backend one of whose options chooses it; else the default."""
    if explicit:
        return explicit
    chosen = next((b for b in backends() if b.chosen_by and settings.get(b.chosen_by)), None)
    return chosen.name if chosen else default_name()


def default_name() -> str:
    return next(b for b in backends() if b.default).name


def misplaced(in_use: str, settings: Settings) -> list[str]:
    """The flags of backends other than `in_use` that were given: a usage error, never silently ignored."""
    flags: list[str] = []
    for backend in backends():
        if backend.name == in_use:
            continue
        if backend.misplaced is not None:
            flags += backend.misplaced(settings, in_use)
        else:
            flags += [o.flag for o in backend.options if settings.get(o.dest)]
    # An option several backends share (--registration: external and image) is misplaced only where the
    # backend in use does not take it; each flag is named once.
    own = {o.flag for o in get(in_use).options} if any(b.name == in_use for b in backends()) else set()
    return list(dict.fromkeys(f for f in flags if f not in own))


def last_resort() -> None:
    for backend in backends():
        backend.last_resort()


def names_in(text: str) -> bool:
    """Whether an error's text names a backend one can choose (an error of that homeserver, then)."""
    return any(b.name in text for b in backends() if b.choice)


# --- the command line ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--homeserver`, `--homeserver-port` and every backend's own options, in registration order."""
    every = backends()
    choices = [b for b in every if b.choice]
    parser.add_argument("--homeserver", default=None, choices=[b.name for b in choices],
                        help="homeserver backend: " + _either(b.choice or b.name for b in choices))
    parser.add_argument("--homeserver-port", type=_port, default=None, metavar="PORT",
                        help="port for the embedded or Docker homeserver on 127.0.0.1 (default: a free one)")
    added: set[str] = set()
    for backend in every:
        for option in backend.options:
            if option.flag in added:  # shared by several backends (see misplaced)
                continue
            added.add(option.flag)
            parser.add_argument(option.flag, default=None, metavar=option.metavar, help=option.help,
                                **dict(option.argparse))


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    return {o.dest: getattr(args, o.dest, None) for b in backends() for o in b.options}


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    # 0 would mean "any free port" to the OS, but the homeserver's URL must be known before it starts.
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, got {value}")
    return value


def _ways() -> str:
    """`synapse (the default), tuwunel, or --homeserver-url URL`: every way to choose a backend."""
    every = backends()
    ways = [f"{b.name} (the default)" if b.default else b.name for b in every if b.choice]
    for backend in every:
        option = next((o for o in backend.options if o.dest == backend.chosen_by), None)
        if option is not None:
            ways.append(f"{option.flag} {option.metavar or 'VALUE'}")
    return ", ".join(ways[:-1]) + f", or {ways[-1]}" if len(ways) > 1 else ways[0]


def _either(items: Iterable[str]) -> str:
    listed = list(items)
    return ", ".join(listed[:-1]) + f" or {listed[-1]}" if len(listed) > 1 else "".join(listed)
