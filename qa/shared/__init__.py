"""The tester's ground floor: small pieces every floor above uses, so no floor reaches sideways or up for them.

Secret redaction (redact), the per-run markers in scenario text (markers), the canary scenario's id (canary) and
the replay miss a replayed run reports (replay_miss). Each imports only the standard library and qa.kernel;
docs/architecture.md lists the floors.
"""
