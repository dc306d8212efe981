"""`matrix-qa schema KIND`: the JSON Schemas in docs/schema/ equal the models', accept every built-in scenario, bot
file, rule file and cassette, write steps in their `{kind: {...}}` wrapper and durations as strings, and refuse
the bad-input corpus's schema cases."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from qa.cli import main
from qa.scenario.json_schema import KINDS, schema_for, schema_text
from qa.scenario.steps.registry import STEP_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "schema"
FILES = {
    "scenario": sorted((ROOT / "scenarios").glob("*.yaml")),
    "bot": [ROOT / "qa" / "agent" / "bot.yaml", *sorted((ROOT / "tests" / "bots").glob("*.yaml"))],
    "rules": sorted((ROOT / "fixtures" / "mock-provider").glob("*.yaml")),
    "cassette": sorted((ROOT / "fixtures" / "cassettes").rglob("*.yaml")),
}
# Files of the bad-input corpus that a schema can see are wrong (others are wrong in ways only the loader sees).
REFUSED = ["e2ee-verify-method.yaml", "faults-unknown-field.yaml", "bad-message-steps.yaml",
           "session-life-bad-field.yaml"]


@functools.cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_for(kind))


def errors(kind: str, data: Any) -> list[str]:
    return [e.message for e in validator(kind).iter_errors(data)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_kept_schema_equals_the_models(kind: str) -> None:
    kept = (DOCS / f"{kind}.json").read_text(encoding="utf-8")
    assert kept == schema_text(kind), (
        f"docs/schema/{kind}.json is stale: for k in {' '.join(KINDS)}; do matrix-qa schema $k > docs/schema/$k.json;"
        " done")


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_a_valid_2020_12_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema_for(kind))
    assert schema_for(kind)["$id"].endswith(f"/{kind}.json")


@pytest.mark.parametrize("kind", KINDS)
def test_every_file_of_the_library_is_accepted(kind: str) -> None:
    assert FILES[kind], kind
    for path in FILES[kind]:
        assert errors(kind, yaml.safe_load(path.read_text(encoding="utf-8"))) == [], path


@pytest.mark.parametrize("name", REFUSED)
def test_the_bad_input_corpus_schema_cases_are_refused(name: str) -> None:
    data = yaml.safe_load((ROOT / "tests" / "bad_inputs" / "scenarios" / name).read_text(encoding="utf-8"))
    assert errors("scenario", data)


def scenario(*steps: Any, **more: Any) -> dict[str, Any]:
    return {"id": "x", "title": "t", "steps": list(steps), **more}


def test_steps_are_written_in_their_wrapper() -> None:
    assert errors("scenario", scenario({"send": {"as": "driver", "body": "hi"}})) == []
    assert errors("scenario", scenario({"restart_homeserver": None})) == []  # no required field: may be bare
    assert errors("scenario", scenario({"as": "driver", "body": "hi"}))  # the model's view, unwrapped
    assert errors("scenario", scenario({"send": None}))  # send has required fields
    assert errors("scenario", scenario({"sned": {"as": "driver", "body": "hi"}}))
    assert errors("scenario", scenario({"send": {"as": "driver", "body": "hi"}, "id": "a"}))


def test_every_step_kind_is_described_with_its_row() -> None:
    items = validator("scenario").schema["properties"]["steps"]["items"]["oneOf"]
    assert [next(iter(i["properties"])) for i in items] == list(STEP_TYPES)
    assert [i["description"] for i in items] == [cls.does for cls in STEP_TYPES.values()]


@pytest.mark.parametrize(("timeout", "ok"), [
    ("90s", True), ("1500ms", True), ("2m", True), ("1h", True), (" 1.5s ", True), (30, True), (0.5, True),
    ("soon", False), ("-1s", False), (0, False), (True, False), ("5 min", False),
])
def test_durations_are_strings_or_positive_numbers(timeout: Any, ok: bool) -> None:
    found = errors("scenario", scenario({"send": {"as": "driver", "body": "hi"}}, timeout=timeout))
    assert (found == []) is ok


def test_yaml_11_off_is_taken_where_the_model_takes_it() -> None:
    data = scenario({"send": {"as": "driver", "body": "hi"}}, rooms={"main": {"bot": {"allowBots": False}}})
    assert errors("scenario", data) == []
    data["rooms"]["main"]["bot"]["allowBots"] = True
    assert errors("scenario", data)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no schema 'x'; one of: scenario, bot, rules, cassette"):
        schema_for("x")


def test_the_cli_prints_the_kept_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "bot"]) == 0
    assert capsys.readouterr().out == (DOCS / "bot.json").read_text(encoding="utf-8")


def test_a_cassette_is_refused_without_its_format() -> None:
    data = yaml.safe_load(FILES["cassette"][0].read_text(encoding="utf-8"))
    assert errors("cassette", data) == []
    assert errors("cassette", {**data, "format": "matrix-qa.cassette/v0"})
    assert errors("cassette", {k: v for k, v in data.items() if k != "exchanges"})
