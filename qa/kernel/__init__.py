"""The shared kernel: the only part of qa that the embedded agent (qa.agent) may import, and that the tester
shares with it: the clock, errors, the trace format, the session lock-file convention and its settings, the
lock doctor, E2EE upkeep, dotted config keys and the choice of event loop. It imports nothing else from qa."""
