"""`python -m tests.integration.held_mint ARGS…`: `matrix-qa ARGS…` whose run holds the first registration token
it mints (`registration: token`): the token is minted on the run's Synapse, written to $HELD_MINT_TOKEN_FILE (so
the test can look for it in what the run leaves), a line on stderr says so, and the harness's minting call then
never returns until the run cancels it. A signal sent after that line lands while the harness mints, every time:
no sleep decides it. Test-only: the run is the CLI's own code otherwise."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from qa import cli
from qa.homeserver.synapse import SynapseHomeserver

HELD = "held-mint: a registration token is minted and held"
_mint = SynapseHomeserver.registration_token


async def _held(self: SynapseHomeserver, uses: int, valid_s: float) -> str:
    token = await _mint(self, uses, valid_s)
    Path(os.environ["HELD_MINT_TOKEN_FILE"]).write_text(token, encoding="utf-8")
    print(HELD, file=sys.stderr, flush=True)
    await asyncio.Event().wait()  # held until the run cancels it
    return token


if __name__ == "__main__":
    SynapseHomeserver.registration_token = _held  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
