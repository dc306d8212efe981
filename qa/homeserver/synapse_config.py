"""Synapse's configuration for a throwaway test server: homeserver.yaml, its logging config, its signing key.

Pure but for `write_signing_key`: the settings a scenario run depends on (rate limits raised, no federation
sender, no push rules, no presence, ...) live here, apart from the process that runs Synapse, so that the image
recipe (tests/images) and the config benchmarks read the same settings without the process code.
"""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa.kernel.errors import InfraError

DEFAULT_SERVER_NAME = "localhost"
NOT_INSTALLED = "matrix-synapse is not installed (pip install matrix-synapse)"

# High enough that no scenario ever meets a 429, low enough to stay a plain number in the YAML.
_UNLIMITED = {"per_second": 10_000, "burst_count": 10_000}

# Every rate limiter Synapse reads with per_second/burst_count (synapse/config/ratelimiting.py). Keys it
# does not know are silently ignored, so tests/unit/test_synapse_config.py checks these through Synapse's
# own config parser rather than trusting the spelling here.
_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_registration_token_validity": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_admin_redaction": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 10_000,
        "sleep_delay": 0,
        "reject_limit": 10_000,
        "concurrent": 10_000,
    },
    "federation_rr_transactions_per_room_per_second": 10_000,
}


def build_synapse_config(
    *,
    workdir: Path,
    port: int,
    server_name: str = DEFAULT_SERVER_NAME,
    extra_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The homeserver.yaml contents for a throwaway test server. Pure: touches no files.

    Secrets are freshly random on every call. `extra_config` is merged last (dicts recursively), so a
    caller can change one rate limit without restating the rest.
    """
    workdir = workdir.resolve()
    config: dict[str, Any] = {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(workdir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # "client" also mounts /_synapse/admin (shared-secret registration, registration tokens)
                # and authenticated media; nothing here federates, so no "federation" resource.
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "log_config": str(workdir / "log_config.yaml"),
        "media_store_path": str(workdir / "media_store"),
        "signing_key_path": str(workdir / "signing.key"),
        "registration_shared_secret": secrets.token_hex(32),
        # Left unset, Synapse derives these from the shared secret; keep them independent.
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        # Registration needs a token, and only the harness's admin can mint one (a bot file's `registration:
        # token`, issue 33): without a token nobody registers, as before; never the shared secret for a bot.
        "enable_registration": True,
        "registration_requires_token": True,
        "report_stats": False,
        "enable_metrics": False,
        # No outbound federation at all: no key fetches from matrix.org, no remote joins, no waiting on DNS.
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        # No federation sender either: with it, every event Synapse stores is queued, looked at and dropped for
        # want of a remote server (213 "did not have cached prev group" lines in one fast-profile run), on the
        # one thread that serves the scenarios. An empty list turns it off (the main process keeps only an
        # in-memory queue for workers that never come).
        "federation_sender_instances": [],
        "url_preview_enabled": False,
        # Test users log in constantly; the default 12 rounds costs ~250 ms per login.
        "bcrypt_rounds": 4,
        "presence": {"enabled": False},
        # No push-rule evaluation: with it on, Synapse runs every local member's push rules against every event
        # it persists (each invite, join and message, on its one thread) and counts unread notifications for
        # every room of every /sync, for pushers that never exist here. What a client sees instead:
        # `unread_notifications` stays empty; push rules themselves are still served and kept as account data.
        "push": {"enabled": False},
        # A cached /sync response would hide events sent in the last moments from a client that retries.
        "caches": {"sync_response_cache_duration": 0},
        # A fresh, short-lived database gains nothing from background updates; they only steal the CPU
        # the scenarios are timing.
        "background_updates": {"min_batch_size": 100_000, "sleep_duration_ms": 100_000},
        **copy.deepcopy(_RATE_LIMITS),
    }
    if extra_config:
        config = deep_merge(config, extra_config)
    return config


def build_log_config(log_path: Path) -> dict[str, Any]:
    """Python logging dictConfig for Synapse: INFO to the log file, warnings also to stderr."""
    fmt = "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
    return {
        "version": 1,
        "formatters": {"precise": {"format": fmt}},
        "handlers": {
            # Unbuffered (unlike Synapse's default): the lines that explain a crash must be on disk
            # when we read them, even if the process was killed.
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_path),
                "encoding": "utf8",
            },
            "console": {"class": "logging.StreamHandler", "formatter": "precise", "level": "WARNING"},
        },
        "loggers": {
            # DEBUG here would log access tokens.
            "synapse.storage.SQL": {"level": "INFO"},
        },
        "root": {"level": "INFO", "handlers": ["file", "console"]},
        "disable_existing_loggers": False,
    }


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_signing_key(path: Path) -> None:
    """Create a federation signing key in-process, which is far cheaper than Synapse's --generate-keys."""
    try:
        from signedjson.key import generate_signing_key, write_signing_keys
    except ImportError as exc:
        raise InfraError(NOT_INSTALLED) from exc
    key = generate_signing_key("a_" + secrets.token_hex(2))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        write_signing_keys(fh, [key])
