"""Every step kind a scenario can use, one class each, grouped by family. Where a new kind goes:

    messages.py        a test user writes to a room, edits or takes it back (send, edit, redact, ...)
    media.py           a test user sends a file
    reactions.py       reactions: sending them and seeing them recorded
    replies.py         how the bot answers: the reply, its place, text, parts and edits, double answers; also
                       what it shows while answering (an `expect_typing` step, read receipts) goes here
    silence.py         the bot provably stays silent
    model_requests.py  what the model was told (the mock provider's journal)
    trace.py           a record in the bot's own trace
    approvals.py       exec approvals: the request, its outcome, a decision
    lifecycle.py       the bot's process, saved state and config; the homeserver's restart
    membership.py      who is in a room: invite, kick, leave, join, membership seen
    faults.py          faults injected on purpose and their evidence
    devices.py         devices in encrypted rooms: a test user's further device, the bot's device
    verification.py    device verification (SAS), in-room verification requests
    encryption.py      which Megolm session, who holds its key, no decrypted text in the artifacts

A kind is a subclass of `base.StepBase` in one of these modules: its YAML fields, `kind` (the YAML key), `does`
(its row in docs/scenarios.md), what it needs of the bot, its references to earlier steps, actors and rooms, and
`async run(ctx)`. `registry` finds it there (a new family module is added to `registry.FAMILIES`); add a
scenario that uses it, a test, and regenerate docs/scenarios.md's step table
(python -m tests.unit.test_step_registry).
A step that waits and then judges keeps the judgement pure, in a module of qa.evidence, beside its tests.

Step modules import the Matrix client (nio, qa.actors) inside `run()`: scenarios are loaded and checked, by
`validate` and before a run's homeserver boots, without it.
"""
