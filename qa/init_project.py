"""`matrix-qa init [DIR]`: a starting point in a bot author's repository: a commented bot file, one scenario of
their own, the config file, the schemas the editor reads, and a GitHub workflow that uses the Action.

What the bot is comes from flags, else from questions at a terminal, else the files get placeholders marked
`FILL-IN` (the run then refuses the command by name, exit 2). Nothing is ever overwritten: if any file is there
already, nothing is written. The file texts are pure functions of the answers, tested without a terminal.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qa.kernel.errors import ConfigError

PLACEHOLDER = "FILL-IN"
BOT_FILE = Path("matrix-qa/bot.yaml")
SCENARIO_FILE = Path("matrix-qa/scenarios/hello.yaml")
SCHEMA_DIR = Path("matrix-qa/schema")
CONFIG_FILE = Path("matrix-qa.toml")
WORKFLOW_FILE = Path(".github/workflows/matrix-qa.yml")
ACTION = "matrix-qa/matrix-qa@v1"  # where the composite Action (action.yml at the repo root) is published
CAPABILITY_HELP = "threads, restart, trace, reactions, e2ee, streaming, ... (docs/bot-file.md); empty: none"


@dataclass
class Answers:
    """What init knows about the bot: None for what nobody said (the file gets a FILL-IN placeholder)."""

    name: str = "my-bot"
    command: list[str] | None = None
    ready_log: str | None = None  # a regex over the bot's output once it syncs; None: ready when joined
    capabilities: list[str] = field(default_factory=list)
    # A bot without a model: the message that makes it answer with exactly {text} (the bot file's `say`, issue
    # 30); None: the bot asks a model, or nobody said.
    say: str | None = None


def bot_file_text(a: Answers) -> str:
    command = json.dumps(a.command) if a.command else json.dumps([PLACEHOLDER, "your bot's command and args"])
    ready = f"{{log: {json.dumps(a.ready_log)}}}" if a.ready_log else "{joined: true}"
    return f"""\
# yaml-language-server: $schema=schema/bot.json
# How matrix-qa starts your bot and knows it is ready. Every field: docs/bot-file.md in matrix-qa.
name: {a.name}
# argv, no shell; started per scenario with the launch contract in its environment: MATRIX_QA_HOMESERVER_URL,
# MATRIX_QA_USER_ID, MATRIX_QA_PASSWORD, MATRIX_QA_ACCESS_TOKEN, MATRIX_QA_DEVICE_ID, MATRIX_QA_ROOM_IDS,
# MATRIX_QA_STATE_DIR, OPENAI_BASE_URL, OPENAI_API_KEY, ... (all of them: docs/bot-file.md in matrix-qa).
# {{python}} is the interpreter matrix-qa runs on.
command: {command}
cwd: "{{bot_dir}}/.."          # run from the repository root (the folder above matrix-qa/)
# When the bot can take messages: {{log: REGEX}} (a line of its output), {{joined: true}} (it joined the rooms) or
# {{trace: true}} (it writes a `ready` trace record).
ready: {ready}
# What the bot can do beyond answering a mention; a scenario that needs more is skipped with the reason.
capabilities: {json.dumps(a.capabilities)}
""" + (_say_text(a.say) if a.say else "")


def _say_text(template: str) -> str:
    return f"""\
# The bot has no model: the message that makes it answer with exactly {{text}}. matrix-qa sends it wherever a
# scenario only needs "the bot answers this with this text", and skips the scenarios that need a model.
say: {json.dumps(template)}
"""


def scenario_text() -> str:
    return """\
# yaml-language-server: $schema=../schema/scenario.json
# Your own scenario: a test user mentions the bot and the bot must answer. Every step: docs/scenarios.md.
# The mock model answers "reply with only this exact marker: ..." with the marker, so a bot that passes what it
# is told to an OpenAI-compatible model (OPENAI_BASE_URL) and posts the answer passes as it is. A bot without a
# model and a `say` command in its bot file gets that command (with the marker) instead of this prompt.
id: hello
title: The bot answers a mention
steps:
  - send: {as: driver, mention: bot, body: "reply with only this exact marker: {token}", id: ask}
  - expect_reply: {to: ask, body: "{token}"}
"""


def config_text() -> str:
    return f"""\
# matrix-qa's settings: every `matrix-qa run` flag, without its dashes. Flags given on the command line win.
bot = "{BOT_FILE}"
scenarios-dir = ["{SCENARIO_FILE.parent}"]
# Only your own scenarios. The built-in library (`matrix-qa list`) expects a bot that asks an OpenAI-compatible
# model and posts its answer; set this to false to run its fast profile too.
no-builtin-scenarios = true
output-dir = "artifacts/matrix-qa"
"""


def workflow_text() -> str:
    return f"""\
# matrix-qa on every pull request: a disposable homeserver, your bot, your scenarios; a failed step is annotated
# on the scenario file. Settings come from matrix-qa.toml.
name: matrix-qa
on: [push, pull_request]
jobs:
  matrix-qa:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: {ACTION}
        with:
          bot-file: {BOT_FILE}
"""


def files(a: Answers) -> dict[Path, str]:
    """Every file init writes, relative to DIR, with its text."""
    from qa.scenario.json_schema import schema_text

    return {
        BOT_FILE: bot_file_text(a), SCENARIO_FILE: scenario_text(), CONFIG_FILE: config_text(),
        SCHEMA_DIR / "scenario.json": schema_text("scenario"), SCHEMA_DIR / "bot.json": schema_text("bot"),
        WORKFLOW_FILE: workflow_text(),
    }


def ask(answers: Answers, prompt: Callable[[str], str]) -> Answers:
    """Fill what the flags left open by asking; an empty answer keeps the placeholder or the default."""
    if answers.command is None:
        text = prompt("The command that starts your bot (e.g. python bot.py): ").strip()
        answers.command = shlex.split(text) or None
    if answers.ready_log is None:
        answers.ready_log = prompt("A regex its output matches once it syncs (empty: ready once it joined): ").strip() \
            or None
    if not answers.capabilities:
        text = prompt(f"What it can do besides answering ({CAPABILITY_HELP}): ")
        answers.capabilities = [c.strip() for c in text.replace(",", " ").split() if c.strip()]
    if answers.say is None and "model" not in answers.capabilities:  # a bot that claims a model has no `say`
        answers.say = _ask_say(prompt)
    return answers


SAY_QUESTION = ("If your bot has no AI model: the message that makes it answer with a given text, {text} where the "
                "text goes (e.g. !echo {text}; empty: it asks a model): ")


def _ask_say(prompt: Callable[[str], str]) -> str | None:
    """The `say` template, asked again (saying why) until it holds {text} once or the answer is empty."""
    question = SAY_QUESTION
    while True:
        text = prompt(question).strip()
        problem = say_problem(text) if text else None
        if problem is None:
            return text or None
        question = f"{problem}; again (empty: it asks a model): "


def say_problem(template: str) -> str | None:
    """Why `template` is no `say` of a bot file (qa.harness.botfile's own rule), or None."""
    from qa.harness.botfile import say_template_problem

    return say_template_problem(template)


def write(target: Path, contents: dict[Path, str]) -> list[Path]:
    """Writes every file, or none when any is there already (named)."""
    there = [rel for rel in contents if (target / rel).exists()]
    if there:
        raise ConfigError(f"init writes nothing over existing files: {', '.join(str(target / r) for r in there)} "
                          "(move them away, or init another directory)")
    for rel, text in contents.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(contents)


def check_capabilities(names: list[str]) -> None:
    from typing import get_args

    from qa.harness.capabilities import Capability

    known = get_args(Capability)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--capabilities: unknown {', '.join(unknown)}; known: {', '.join(known)}")


def init(target: Path, answers: Answers, prompt: Callable[[str], str] | None, say: Callable[[str], None]) -> int:
    """`matrix-qa init`: asks (when `prompt` is given and the flags left the command open), writes, says what."""
    if answers.command is None and prompt is not None:
        answers = ask(answers, prompt)
    check_capabilities(answers.capabilities)
    if answers.say is not None and say_problem(answers.say):
        raise ConfigError(f"--say: {say_problem(answers.say)}")
    if answers.say is not None and "model" in answers.capabilities:
        raise ConfigError("--say is for a bot without a model, and --capabilities names model: give one of the two")
    written = write(target, files(answers))
    for rel in written:
        say(f"wrote {target / rel}")
    where = "" if target.resolve() == Path.cwd().resolve() else f"cd {shlex.quote(str(target))} && "
    if answers.command is None:
        say(f"next: put your bot's command where {BOT_FILE} says {PLACEHOLDER}, then: {where}matrix-qa run")
    else:
        say(f"next: {where}matrix-qa run")
    return 0
