"""The bot's crypto store with its models bound once (qa.agent.store_binding) against nio's own store, in
alternating forked children of one process that imported the agent (as its fork server has): the encrypted
client's restore_login on a fresh store (its load, a start's `login` phase), then 20 save_encrypted_rooms calls
(the store call every sync of an encrypted bot makes), process CPU ms, medians. Not a test: nothing is asserted.

    python bench/store_binding_pair.py [PAIRS]
"""

from __future__ import annotations

import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for m in ["nio.crypto.attachments", "qa.agent.__main__"]:
    importlib.import_module(m)
from nio.store import DefaultStore  # noqa: E402

from qa.agent import crypto_store, store_binding  # noqa: E402
from qa.agent.config import AgentConfig  # noqa: E402
from qa.kernel.trace import Trace  # noqa: E402

res: dict[str, list[tuple[float, ...]]] = {"nio": [], "bound-once": []}
scratch = tempfile.mkdtemp(prefix="store-binding-pair-")
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 12):
    for name in res:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            crypto_store.STORE = DefaultStore if name == "nio" else store_binding.BoundOnceStore
            d = tempfile.mkdtemp(dir=scratch)
            config = AgentConfig.model_validate({"homeserver": "http://127.0.0.1:1", "userId": "@bot:x",
                                                 "stateDir": d, "rooms": {}, "encryption": True,
                                                 "model": {"baseUrl": "http://m", "model": "m"}})
            c = crypto_store.CryptoIdentity(config, Trace(None), "pw").new_client("DEV")
            c0 = time.process_time()
            c.restore_login("@bot:x", "DEV", "tok")
            c1 = time.process_time()
            for _ in range(20):
                c.store.save_encrypted_rooms([])
            c2 = time.process_time()
            os.write(w, f"{(c1 - c0) * 1000:.2f} {(c2 - c1) * 1000 / 20:.3f}".encode())
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        res[name].append(tuple(map(float, os.read(r, 100).split())))
        os.close(r)
for name, v in res.items():
    print(f"{name:10} restore_login CPU ms median {statistics.median(x[0] for x in v):6.1f}   "
          f"per store call {statistics.median(x[1] for x in v):.3f} ms   (n={len(v)})")
shutil.rmtree(scratch, ignore_errors=True)
