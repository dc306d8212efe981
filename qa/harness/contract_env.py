"""The launch contract's variable names and what a bot may inherit besides, with nothing heavier than the standard
library: `matrix-qa run` starts the fork server (qa.harness.early_fork_server) before it imports the bot file model."""

from __future__ import annotations

from collections.abc import Mapping

from qa.processes import WITHHELD_ENV_PREFIXES

# The launch contract's variables (qa.harness.launch): always the harness's values, never a bot file's.
CONTRACT_ENV = ("MATRIX_QA_HOMESERVER_URL", "MATRIX_QA_USER_ID", "MATRIX_QA_PASSWORD", "MATRIX_QA_ACCESS_TOKEN",
                "MATRIX_QA_DEVICE_ID", "MATRIX_QA_ROOM_IDS", "MATRIX_QA_STATE_DIR", "MATRIX_QA_TRACE_FILE",
                "MATRIX_QA_EXEC_DIR", "MATRIX_QA_SCENARIO", "MATRIX_QA_MODEL", "MATRIX_QA_CONFIG", "OPENAI_BASE_URL",
                "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "MATRIX_QA_ACCOUNTS",
                "MATRIX_QA_REGISTRATION_TOKEN", "MATRIX_QA_MODEL_TIMEOUT_S", "MATRIX_QA_APPSERVICE_REGISTRATION",
                "MATRIX_QA_AS_TOKEN", "MATRIX_QA_HS_TOKEN")


def inherited_env(base_env: Mapping[str, str]) -> dict[str, str]:
    """Pure: what a bot may inherit from the harness: never a withheld variable, never a contract name (each launch
    sets its own, so a value the harness inherited for one, such as the user's own OPENAI_API_KEY that record mode
    keeps from the bot, is never one a bot may see). Also the whole environment of the fork server, which outlives
    every launch: /proc/<pid>/environ of each bot it forks shows what it was started with."""
    return {k: v for k, v in base_env.items()
            if not k.startswith(WITHHELD_ENV_PREFIXES) and k not in CONTRACT_ENV}
