"""Pure decisions of the image backend: --homeserver-env, the registration mode, presets, the start judgement.

Nothing here talks to Docker or a homeserver, so every rule is unit-tested without either
(tests/unit/test_homeserver_image_options.py). qa.homeserver.image does the I/O on these decisions.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qa.homeserver.tuwunel_image import DEFAULT_IMAGE as TUWUNEL_IMAGE
from qa.kernel.errors import ConfigError
from qa.shared.redact import MIN_SECRET_LENGTH

# Complement's image contract (https://github.com/matrix-org/complement#image-requirements).
CONTRACT_PORT = 8008
SERVER_NAME_ENV = "SERVER_NAME"
DEFAULT_SERVER_NAME = "localhost"

OPEN, SHARED_SECRET, TOKEN = "open", "shared-secret", "token"
MODES = (OPEN, SHARED_SECRET, TOKEN)
ENV_REGISTRATION_TOKEN = "MATRIX_QA_REGISTRATION_TOKEN"
ENV_REGISTRATION_SHARED_SECRET = "MATRIX_QA_REGISTRATION_SHARED_SECRET"

# What the run says about how its users came to be, by mode.
DESCRIBED = {
    OPEN: "open registration (m.login.dummy)",
    SHARED_SECRET: "shared-secret registration (/_synapse/admin/v1/register)",
    TOKEN: "a registration token (m.login.registration_token)",
}

# A POSIX-style variable name: what `docker run -e` passes on unchanged.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse_env(items: Sequence[str] | None, flag: str = "--homeserver-env") -> dict[str, str]:
    """`KEY=VALUE` strings (repeatable flag) → a mapping; ConfigError naming the flag and the item otherwise.

    The value may be empty or hold `=`; the key must be a variable name, given once."""
    env: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r} (no '=')")
        if not _ENV_NAME.match(key):
            raise ConfigError(f"{flag} {item!r}: {key!r} is not a variable name (letters, digits and '_', "
                              "not starting with a digit)")
        if "\x00" in value or "\n" in value:
            raise ConfigError(f"{flag} {key}=...: the value holds a NUL or a newline, which an environment "
                              "variable cannot carry")
        if key in env:
            raise ConfigError(f"{flag} gives {key} twice ({key}={env[key]!r} and {item!r}); give it once")
        env[key] = value
    return env


@dataclass(frozen=True)
class Registration:
    """How test users are made, and the one secret that takes (never in a repr)."""

    mode: str
    secret: str | None = field(default=None, repr=False)
    # Every credential that was given, used or not: all are kept out of the artifacts.
    given: tuple[str, ...] = field(default=(), repr=False)

    @property
    def described(self) -> str:
        return DESCRIBED[self.mode]

    @property
    def secrets(self) -> list[str]:
        return list(dict.fromkeys(v for v in (self.secret, *self.given) if v))


def resolve_registration(mode: str | None, *, token: str | None, shared_secret: str | None,
                         env: Mapping[str, str], default: str | None, needed_by: str) -> Registration:
    """The registration the user chose; never a probe of the server. Pure.

    `token`/`shared_secret` are the flags' values; the environment variables stand in for absent flags. With no
    --registration: `default` (an image's contract says open) or, when None, the one credential given (flags
    before the environment; both of one kind is a ConfigError asking for --registration). A mode without its
    secret, or a secret flag the chosen mode does not use, is a ConfigError too."""
    flags = {TOKEN: _clean(token), SHARED_SECRET: _clean(shared_secret)}
    values = {TOKEN: flags[TOKEN] or _clean(env.get(ENV_REGISTRATION_TOKEN)),
              SHARED_SECRET: flags[SHARED_SECRET] or _clean(env.get(ENV_REGISTRATION_SHARED_SECRET))}
    if mode is None:
        mode = default or _implied_mode(flags) or _implied_mode(values)
    if mode is None:
        raise ConfigError(f"{needed_by} needs a way to create test users: --registration open, or "
                          "--registration-token TOKEN or --registration-shared-secret SECRET (or the environment "
                          f"variables {ENV_REGISTRATION_TOKEN} / {ENV_REGISTRATION_SHARED_SECRET}, which keep them "
                          "out of the process list)")
    if mode not in MODES:
        raise ConfigError(f"--registration {mode!r} is not a registration mode; use open, shared-secret or token")
    for other, value in flags.items():
        if other != mode and value is not None:
            raise ConfigError(f"{_FLAG[other]} is not used with --registration {mode}")
    given = tuple(v for v in values.values() if v is not None)
    if mode == OPEN:
        return Registration(OPEN, given=given)
    value, flag, variable = values[mode], _FLAG[mode], _VARIABLE[mode]
    if value is None:
        raise ConfigError(f"--registration {mode} needs {flag} (or the environment variable {variable})")
    if len(value) < MIN_SECRET_LENGTH:
        # Redaction ignores strings this short (they would match ordinary text), so it would leak.
        raise ConfigError(f"{flag} (or {variable}) is shorter than {MIN_SECRET_LENGTH} characters: too short to "
                          "keep out of the artifacts (redaction ignores strings that short)")
    return Registration(mode, value, given)


_FLAG = {TOKEN: "--registration-token", SHARED_SECRET: "--registration-shared-secret"}
_VARIABLE = {TOKEN: ENV_REGISTRATION_TOKEN, SHARED_SECRET: ENV_REGISTRATION_SHARED_SECRET}


def _clean(value: str | None) -> str | None:
    return (value or "").strip() or None


def _implied_mode(given: Mapping[str, str | None]) -> str | None:
    """The one mode whose credential is given; None for none; a ConfigError for both (never a guess)."""
    present = [mode for mode, value in given.items() if value is not None]
    if len(present) > 1:
        raise ConfigError("both a registration token and a registration shared secret are given; say which to "
                          "use with --registration token or --registration shared-secret")
    return present[0] if present else None


@dataclass(frozen=True)
class Preset:
    """An image whose environment and registration matrix-qa knows, chosen by name (`--homeserver tuwunel`)."""

    name: str
    image: str
    env: Mapping[str, str]
    server_name_env: str
    # The environment variable that takes a registration token matrix-qa makes fresh for each container.
    token_env: str | None = None
    version_paths: tuple[str, ...] = ()


TUWUNEL = Preset(
    name="tuwunel",
    image=TUWUNEL_IMAGE,
    env={
        "TUWUNEL_DATABASE_PATH": "/var/lib/tuwunel",
        "TUWUNEL_ADDRESS": "0.0.0.0",
        "TUWUNEL_PORT": str(CONTRACT_PORT),
        "TUWUNEL_ALLOW_REGISTRATION": "true",
        "TUWUNEL_ALLOW_FEDERATION": "false",
        "TUWUNEL_ALLOW_ENCRYPTION": "true",
        "TUWUNEL_TRUSTED_SERVERS": "[]",
    },
    server_name_env="TUWUNEL_SERVER_NAME",
    token_env="TUWUNEL_REGISTRATION_TOKEN",
    # The spec's endpoint first; Tuwunel also answers its own, which does not depend on federation being enabled.
    version_paths=("/_matrix/federation/v1/version", "/_tuwunel/server_version"),
)


def fresh_token() -> str:
    return secrets.token_urlsafe(24)


def container_env(*, server_name: str, server_name_env: str, preset_env: Mapping[str, str],
                  user_env: Mapping[str, str], token_env: str | None = None,
                  token: str | None = None) -> dict[str, str]:
    """The container's environment: the preset's, then the server name and the fresh token, then the user's
    --homeserver-env, which wins (it is how an image's own settings are given)."""
    env = {server_name_env: server_name, **preset_env}
    if token_env and token:
        env[token_env] = token
    env.update(user_env)
    return env


def server_name_in(env: Mapping[str, str], server_name_env: str = SERVER_NAME_ENV) -> str:
    """The server name the container will use: --homeserver-env SERVER_NAME=... if given, else localhost."""
    return env.get(server_name_env) or DEFAULT_SERVER_NAME


# A server that answers /versions with 404 for this long has no /versions (a server still starting answers
# with a connection error or a 5xx from its proxy, not a 404 from the homeserver itself).
NO_VERSIONS_AFTER_S = 10.0


def judge_start(*, status: str, exit_code: int | None, last_answer: str, waited_s: float, timeout_s: float,
                not_found_for_s: float) -> str | None:
    """Why a container that is not (yet) answering `/versions` 200 will not come up, or None: keep waiting.

    `status` is Docker's (created, running, exited, dead, gone), `last_answer` what /versions last said
    (`HTTP 404`, or the connection error), `not_found_for_s` how long it has answered 404 without a break."""
    if status == "gone":
        return "the container disappeared before answering /_matrix/client/versions"
    if status in ("exited", "dead"):
        when = "at once" if waited_s < 5 else f"after {waited_s:.0f}s"
        return f"the container exited {when} with exit code {exit_code}, before answering /_matrix/client/versions"
    if last_answer == "HTTP 404" and not_found_for_s >= NO_VERSIONS_AFTER_S:
        return (f"no /_matrix/client/versions: it answered HTTP 404 for {not_found_for_s:.0f}s "
                "(the contract asks for 200)")
    if waited_s < timeout_s:
        return None
    return f"did not answer /_matrix/client/versions within {timeout_s:g}s ({last_answer})"
