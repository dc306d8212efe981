"""A homeserver backend that lives outside qa/: the embedded Synapse under another name, with options of its
own. Registering it (`register(BACKEND)`) is all it takes for `--homeserver standin` to exist, for its options
to reach it, for its secrets to be redacted and for its last-resort cleanup to run: the proof that a backend
is its own module plus a registry entry, and nothing else in qa/ names it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from qa.homeserver.registry import Backend, Option, Settings, StartRequest
from qa.homeserver.synapse import SynapseHomeserver

# What the stand-in was asked, for the tests that look: every create's settings, every last resort.
CALLS: list[str] = []
SECRET_FLAG = "--standin-secret"


class StandInHomeserver(SynapseHomeserver):
    kind = "standin"


def _create(request: StartRequest) -> StandInHomeserver:
    CALLS.append("create")
    request.log_dir.mkdir(parents=True, exist_ok=True)
    # Its settings go into a file in the artifacts, the secret included: the run's redaction must catch it.
    (request.log_dir / "standin-settings.json").write_text(json.dumps(dict(request.settings)), encoding="utf-8")
    return StandInHomeserver(request.work_dir / "standin", request.log_dir, port=request.port)


def _preflight(settings: Settings, env: Mapping[str, str]) -> list[str]:
    CALLS.append("preflight")
    return [settings["standin_secret"]] if settings.get("standin_secret") else []


def _last_resort() -> None:
    CALLS.append("last resort")


BACKEND = Backend(
    name="standin", create=_create, preflight=_preflight, last_resort=_last_resort,
    choice="standin (the embedded Synapse under another name)",
    options=(Option("--standin-motto", metavar="TEXT", help="a setting only the stand-in reads"),
             Option(SECRET_FLAG, metavar="SECRET", help="a secret only the stand-in knows")),
)


if __name__ == "__main__":  # `python -m tests.standin_backend run --homeserver standin ...`: the CLI with it
    import sys

    from qa.cli import main
    from qa.homeserver.registry import register

    register(BACKEND)
    sys.exit(main(sys.argv[1:]))
