"""The run choosing the built-in library's files by their heads (qa.scenario.loader.load_chosen,
qa.run.options.plan_scenarios): the same plan, and the same messages for every file parsed, as parsing every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qa.harness.plan import select
from qa.kernel.errors import ConfigError
from qa.run.options import RunOptions, plan_scenarios
from qa.scenario import loader
from qa.scenario.heads import Head, head
from qa.scenario.loader import ScenarioError, load_chosen, load_scenarios

LIBRARY = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture(scope="module")
def library() -> list[object]:
    return list(load_scenarios(LIBRARY))


def test_every_library_file_has_a_head_that_its_parse_agrees_with(library: list[Any]) -> None:
    heads = [head(path.read_text(encoding="utf-8")) for path in sorted(LIBRARY.glob("*.yaml"))]
    assert None not in heads and len(heads) == len(library)
    assert {h.id: h for h in heads if h} == {s.id: Head(s.id, tuple(s.profiles)) for s in library}


def _plan(**options: object) -> list[str]:
    return [s.id for s in plan_scenarios(RunOptions(**options))[0]]  # type: ignore[arg-type]


def test_the_plan_is_the_one_every_file_parsed_gives(library: list[Any]) -> None:
    for options in ({}, {"profile": "e2ee"}, {"profile": "media"},
                    {"scenario_ids": ["canary", "matrix-allowlist-block"]}, {"keywords": ["allow"]}):
        run = RunOptions(**options)  # type: ignore[arg-type]
        assert _plan(**options) == [s.id for s in select(library, run.profile, run.scenario_ids, run.keywords)]


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


SCENARIO = "id: {id}\ntitle: t\nprofiles: [{profiles}]\nsteps:\n  - send: {{as: driver, body: hi}}\n"


def _as_library(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    from qa.run import options

    monkeypatch.setattr(options, "default_scenario_paths", lambda: [directory])


def _everything(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.run import options

    monkeypatch.setattr(options, "load_chosen", lambda *args: None)


def _outcome(**options: object) -> object:
    try:
        return _plan(**options)
    except ConfigError as exc:
        return str(exc)


def _same_as_parsing_every_file(monkeypatch: pytest.MonkeyPatch, **options: object) -> object:
    planned = _outcome(**options)
    with monkeypatch.context() as patch:
        _everything(patch)
        assert planned == _outcome(**options)
    return planned


def test_only_the_library_files_the_run_chooses_are_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "a.yaml", SCENARIO.format(id="a", profiles="fast"))
    _write(tmp_path, "b.yaml", "id: b\nprofiles: [slow]\nsteps: [unclosed\n")  # broken, and not chosen
    _write(tmp_path, "c.yaml", SCENARIO.format(id="c", profiles="fast, slow"))
    parsed: list[str] = []
    real = loader._load_file
    monkeypatch.setattr(loader, "_load_file", lambda path, cache=None: parsed.append(path.name) or real(path, cache))
    chosen = load_chosen(tmp_path, lambda h: "fast" in h.profiles, lambda path: True)
    assert chosen is not None and [s.id for s in chosen] == ["a", "c"]
    assert parsed == ["a.yaml", "c.yaml"]
    _as_library(monkeypatch, tmp_path)
    assert _plan(scenario_paths=[tmp_path]) == ["a", "c"]
    with pytest.raises(ScenarioError) as caught:
        _plan(scenario_paths=[tmp_path], profile="slow")
    with pytest.raises(ScenarioError) as every:
        load_scenarios(tmp_path)
    assert str(caught.value) == str(every.value), "a chosen file: its error, as ever"
    assert str(caught.value).startswith(f"{tmp_path / 'b.yaml'}:4:1: YAML syntax error")


def test_every_file_the_user_names_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library, own = tmp_path / "library", tmp_path / "own"
    library.mkdir()
    own.mkdir()
    _write(library, "a.yaml", SCENARIO.format(id="a", profiles="fast"))
    _write(library, "b.yaml", SCENARIO.format(id="b", profiles="slow"))
    broken = _write(own, "c.yaml", "id: c\nprofiles: [slow]\nsteps: [unclosed\n")
    _as_library(monkeypatch, library)
    planned = _same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own])
    assert isinstance(planned, str) and planned.startswith(f"{broken}:4:1: YAML syntax error"), planned
    _write(own, "c.yaml", SCENARIO.format(id="c", profiles="slow"))
    _write(own, "d.yaml", SCENARIO.format(id="d", profiles="fast"))
    assert _same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own]) == ["a", "d"]
    assert _same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own], profile="slow") == ["b", "c"]
    _write(own, "d.yaml", SCENARIO.format(id="b", profiles="fast"))  # the library's id again
    assert "duplicate scenario id 'b'" in str(_same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own]))
    _write(own, "d.yaml", SCENARIO.format(id="d", profiles="slow"))
    _write(own, "e.yaml", SCENARIO.format(id="e", profiles="other"))
    assert _same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own], profile="other") == ["e"]
    assert "no scenario is in profile 'nope'" in str(
        _same_as_parsing_every_file(monkeypatch, scenario_paths=[library, own], profile="nope"))


def test_a_chosen_file_keeps_every_one_of_its_errors(tmp_path: Path) -> None:
    text = "id: a\ntitle: t\nprofiles: [fast]\nbogus: 1\nsteps:\n  - sned: x\n"
    _write(tmp_path, "a.yaml", text)
    _write(tmp_path, "z.yaml", SCENARIO.format(id="z", profiles="fast"))
    with pytest.raises(ScenarioError) as every:
        load_scenarios(tmp_path)
    with pytest.raises(ScenarioError) as chosen:
        load_chosen(tmp_path, lambda h: True, lambda path: True)
    assert str(chosen.value) == str(every.value) and len(str(every.value).splitlines()) == 2


@pytest.mark.parametrize(("files", "why"), [
    ({"a.yaml": "id: 'a'\nprofiles: [fast]\n"}, "a head that needs the parse"),
    ({"a.yaml": SCENARIO.format(id="a", profiles="fast"), "b.yaml": SCENARIO.format(id="a", profiles="x")},
     "one id in two files"),
    ({"a.yaml": SCENARIO.format(id="a", profiles="fast") + "title: again\n"}, "a parse that refuses the file"),
    ({"a.yaml": SCENARIO.format(id="a", profiles="fast").replace("title: t", "title: \"t\n2\"")},
     "a parse that agrees"),
    ({"a.yaml": "id: a\ntitle: t\nprofiles: [fast]\nsteps:\n  - send: {as: driver, body: hi}\n\x00"},
     "a parse that refuses the text"),
])
def test_when_heads_cannot_be_trusted_every_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         files: dict[str, str], why: str) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    _as_library(monkeypatch, tmp_path)
    _same_as_parsing_every_file(monkeypatch, scenario_paths=[tmp_path])


def test_a_parse_that_disagrees_with_its_head_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "a.yaml", SCENARIO.format(id="a", profiles="fast"))
    assert load_chosen(tmp_path, lambda h: True, lambda path: True) is not None
    monkeypatch.setattr(loader, "head", lambda text: Head("a", ("fast", "e2ee")))
    assert load_chosen(tmp_path, lambda h: True, lambda path: True) is None
    monkeypatch.setattr(loader, "head", lambda text: Head("b", ("fast",)))
    assert load_chosen(tmp_path, lambda h: True, lambda path: True) is None


def test_no_chosen_file_or_an_unknown_id_falls_back_for_select_s_own_message(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "a.yaml", SCENARIO.format(id="a", profiles="fast"))
    _write(tmp_path, "b.yaml", SCENARIO.format(id="b", profiles="slow"))
    _as_library(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match=r"no scenario is in profile 'nope'; profiles: all, fast, slow"):
        _plan(scenario_paths=[tmp_path], profile="nope")
    with pytest.raises(ConfigError, match=r"unknown scenario id\(s\): zz; known ids: a, b"):
        _plan(scenario_paths=[tmp_path], scenario_ids=["a", "zz"])
    assert _plan(scenario_paths=[tmp_path], scenario_ids=["b"]) == ["b"]
    assert load_chosen(tmp_path / "missing", lambda h: True, lambda path: True) is None
