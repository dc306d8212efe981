"""`validate --bot`: a bot file's config template rendered at validate time, once per scenario, with a full set of
sample launch facts under StrictUndefined, so a variable it names that no launch defines is found before a run.

Why: the template is otherwise first rendered when a scenario starts its bot, and a typo there surfaces as that
scenario's failure (or every scenario's) instead of one configuration error up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qa.harness.botfile import BotFile
from qa.harness.launch import LaunchFacts, render_config, template_context
from qa.kernel.errors import ConfigError, QAError
from qa.scenario.settings import bot_settings

SAMPLE = Path("/sample")


def sample_facts(scenario: Any) -> LaunchFacts:
    """Pure: launch facts of the shape a run gives, for `scenario` (its actors, the rooms the bot is invited to,
    its bot: block), with sample values."""
    # The peer bot, when the scenario has one, is named in the bot's settings as an actor is (qa.scenario.peer).
    actors = {name: f"@{name}:localhost" for name in [*scenario.actors, *filter(None, [scenario.peer_bot])]}
    rooms = {name: f"!{name}:localhost" for name, spec in scenario.rooms.items() if spec.invite_bot}
    return LaunchFacts(
        homeserver_url="http://127.0.0.1:8008", server_name="localhost", user_id="@bot:localhost",
        password="sample-password", password_file=SAMPLE / "bot-password", access_token="sample-token",
        device_id="SAMPLEDEVICE", rooms=rooms, actors=actors, provider_base_url="http://127.0.0.1:9/v1",
        provider_api_key="sample-key", model="sample-model", scenario_id=scenario.id,
        scenario_title=scenario.title, bot=bot_settings(scenario, actors, rooms), encryption=False,
        state_dir=SAMPLE / "state" / "bot", trace_file=SAMPLE / "state" / "bot-trace.jsonl",
        provider_timeout_s=60.0, provider_max_retries=2,
    )


def check_bot_template(bot: BotFile, scenarios: list[Any]) -> list[ConfigError]:
    """One ConfigError per distinct problem of rendering the template with each scenario's sample facts."""
    if bot.template_path() is None:
        return []
    problems: dict[str, ConfigError] = {}
    for scenario in scenarios:
        facts = sample_facts(scenario)
        try:
            render_config(bot, template_context(bot, facts, SAMPLE / "config"), {})
        except QAError as exc:
            problems.setdefault(str(exc), ConfigError(f"{exc} (rendered with the sample facts of scenario "
                                                      f"{scenario.id})"))
    return list(problems.values())
