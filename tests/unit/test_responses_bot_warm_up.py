"""The Responses test bot's warm-up (tests/bots/responses_reply_bot.py `warm_up`, preloaded by its bot files' fork
server): it builds the openai SDK's deferred pydantic models a first answer needs, so a forked bot does not pay them
(1-2.5 CPU-seconds each), and leaves nothing behind that a fork must not inherit: no thread, no socket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BOTS = Path(__file__).resolve().parents[1] / "bots"
PROBE = """
import json, os, sys, threading
sys.path.insert(0, sys.argv[1])
from openai.lib.streaming.responses import _events as events
from openai.types.responses import Response
import responses_reply_bot
needed = (Response, events.ResponseCompletedEvent, events.ResponseTextDeltaEvent)
if sys.argv[2] == "warm":
    responses_reply_bot.warm_up()
links = [f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")]  # one was listdir's own, closed by now
sockets = [link for link in links if os.path.exists(link) and os.readlink(link).startswith("socket:")]
print(json.dumps({"built": [cls.__pydantic_complete__ for cls in needed], "threads": threading.active_count(),
                  "sockets": len(sockets)}))
"""


@pytest.mark.parametrize("warm", [True, False], ids=["warmed", "cold"])
def test_the_warm_up_builds_what_the_first_answer_needs_and_leaves_no_thread_or_socket(warm: bool) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(BOTS), "warm" if warm else "cold"], capture_output=True,
                          text=True, timeout=120, check=True)
    seen = json.loads(done.stdout)
    # Cold, the models are still deferred: what every forked bot would build on its first answer.
    assert seen == {"built": [warm] * 3, "threads": 1, "sockets": 0}, done.stderr
