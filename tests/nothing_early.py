"""Flags for a `matrix-qa run` a test expects to be refused before it needs a homeserver or a bot.

`run` starts importing the embedded Synapse (qa.homeserver.early_synapse) and the built-in agent's fork server
(qa.harness.early_fork_server) beside its own checks, so that a run that goes ahead finds them ready; a refused run
stops them unused. With a homeserver named by URL (never contacted: nothing listens on port 9) and no fork server,
it starts neither: a refusal then cost 1.0-2.7 CPU-seconds where it cost 3.6-8.3 (no URL: both started) or
2.9-5.6 (the session's Synapse by URL: the fork server started), each pair the same command
(bench/run_costs.py's refusal, and the refusals of the tests that use this, timed by hand at load ~12). What the
early processes do when a run is refused (stopped, none left) is the bad-input corpus's check
(tests/test_bad_inputs.py); a run that wrongly went ahead fails on the dead URL, with the homeserver's error
instead of the refusal the test expects.
"""

from __future__ import annotations

NOTHING_EARLY = ["--homeserver-url", "http://127.0.0.1:9", "--registration", "open", "--no-fork-server"]
