"""The shared kernel: the only part of qa that the embedded agent (qa.agent) may import, and that the tester
shares with it: the clock, errors, the trace format, the session lock-file convention and its settings, the
lock doctor, E2EE upkeep and dotted config keys. It imports nothing else from qa."""
