"""Load scenario files, turning every problem into a `file:line:column: field: message` error.

PyYAML's composed node tree keeps a start mark for every key and value, so a pydantic error location such as
steps.1.send.bdy is walked down that tree to the node the user wrote. The same tree catches what
plain `yaml.safe_load` hides: a key written twice in one mapping (PyYAML silently keeps the last).

Order of scenarios: by file name, except that the scenario with id `canary` always runs first. The canary is
the cheapest proof that homeserver, bot and provider are wired up, so a broken setup fails in seconds rather
than after a whole plan of confusing failures.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qa import safe_yaml
from qa.kernel.errors import ConfigError
from qa.safe_yaml import Loc, field_path
from qa.scenario.foreseen import files_in
from qa.scenario.heads import Head, head
from qa.scenario.schema import Scenario, field_keys, model_at
from qa.scenario.steps.registry import describe_step_problem
from qa.shared.canary import CANARY


class ScenarioError(ConfigError):
    """One problem in one scenario file; `line` and `column` are 1-based, `field` is dotted (steps[1].send)."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = "" if self.path is None else str(self.path)
        if self.path is not None and self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        parts = [p for p in (where, self.field) if p]
        return ": ".join([*parts, self.message])

    def __str__(self) -> str:
        return self.format()


class ScenarioErrors(ScenarioError):
    """Several problems at once, so a user fixes all of them in one go.

    A ScenarioError itself (located at the first problem) so `except ScenarioError` catches both; `errors`
    holds them all and str() lists one per line.
    """

    def __init__(self, errors: list[ScenarioError]) -> None:
        if not errors:
            raise ValueError("ScenarioErrors needs at least one error")
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, path=first.path, line=first.line, column=first.column, field=first.field)

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors)


# --- walking the YAML node tree ----------------------------------------------------------------------------


def _duplicate_keys(node: Node, loc: Loc, seen_nodes: set[int]) -> Iterator[tuple[Node, Loc, Node]]:
    """(second key node, location, first key node) for each key repeated within one mapping."""
    if id(node) in seen_nodes:  # aliases can make the tree a graph, even a cyclic one
        return
    seen_nodes.add(id(node))
    if isinstance(node, MappingNode):
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if key is not None and key != "<<":
                if key in first:
                    yield key_node, (*loc, key), first[key]
                else:
                    first[key] = key_node
            yield from _duplicate_keys(value_node, (*loc, key if key is not None else "?"), seen_nodes)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i), seen_nodes)


# --- one file ----------------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    path: Path
    scenario: Scenario | None = None
    root: Node | None = None
    errors: list[ScenarioError] = field(default_factory=list)

    def error(self, message: str, node: Node | None = None, loc: Loc = ()) -> None:
        mark = node.start_mark if node is not None else None
        self.errors.append(
            ScenarioError(
                message,
                path=self.path,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                field=field_path(loc) or None,
            )
        )


def describe_error(err: ErrorDetails) -> str:
    """One pydantic error in the words a scenario author reads (also for the pytest plugin's step calls)."""
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        model = model_at(loc[:-1])
        if model is None:
            return "unknown field"
        known = field_keys(model)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown field ({hint}known: {', '.join(known)})"
    if kind == "step_type":
        return describe_step_problem(err["input"])
    msg = err["msg"]
    # pydantic prefixes messages of plain ValueErrors; the file:line prefix already says it's an error.
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _check_rule_files(out: _Loaded, root: Node, cache: dict[str, list[str]] | None) -> None:
    """Load the mock-provider rule files the scenario names, so a broken one is found by `validate` and
    stops `run` before anything starts. Paths are relative to the folder above the scenario's own folder (the
    repo root for scenarios/ + fixtures/), as the run resolves them (qa.library.rules_root_for)."""
    from qa.library import confined, rules_root_for
    from qa.provider.rules import RuleFileError, load_rules

    assert out.scenario is not None
    cache = {} if cache is None else cache
    for index, name in enumerate(out.scenario.provider.rules):
        path = rules_root_for(out.path) / name
        key = str(path)
        _, why = confined(rules_root_for(out.path), name)
        if why is not None and why != "not found":  # a missing file: load_rules says so, with its own words
            cache[key] = [f"{key}: {why}"]
        if key not in cache:
            try:
                load_rules(path)
                cache[key] = []
            except RuleFileError as exc:
                cache[key] = str(exc).splitlines()
        name = key
        loc: Loc = ("provider", "rules", index)
        for problem in cache[name]:
            out.error(f"rule file {problem}", safe_yaml.locate(root, loc, at_key=False), loc)


def _check_hold_names(out: _Loaded, root: Node) -> None:
    """A hold a step releases must be one that a rule of the scenario's own rule files (or a built-in) makes: a
    misspelt name is found here, not by a step that waits for a hold nobody makes. Only once those files load."""
    from qa.library import confined, rules_root_for
    from qa.provider.rules import RuleFileError, load_default_rules, load_rules

    assert out.scenario is not None
    wanted = [(index, step, where, name) for index, step in enumerate(out.scenario.steps)
              for where, name in step.provider_holds()]
    if not wanted:
        return
    # Only files _check_rule_files would read: a FIFO or a link out of the library is refused there, unread (read
    # here, a FIFO would hang `validate` and `run`).
    if any(confined(rules_root_for(out.path), name)[1] is not None for name in out.scenario.provider.rules):
        return
    try:
        rules = [rule for name in out.scenario.provider.rules for rule in load_rules(rules_root_for(out.path) / name)]
    except RuleFileError:
        return  # _check_rule_files says what is wrong with them
    made = sorted({rule.hold_name for rule in [*rules, *load_default_rules()] if rule.hold_name is not None})
    for index, step, where, name in wanted:
        if name not in made:
            loc: Loc = ("steps", index, step.kind, *where)
            out.error(f"no rule of this scenario's provider.rules holds under {name!r} (holds there: "
                      f"{', '.join(made) or 'none'}; a rule's `hold: NAME`)", safe_yaml.locate(root, loc, at_key=False),
                      loc)


def _check_media_fixtures(out: _Loaded, root: Node) -> None:
    """The media fixtures a step sends must exist, so a typo stops `validate` instead of failing mid-run."""
    from qa.library import confined, media_fixture

    assert out.scenario is not None
    for index, step in enumerate(out.scenario.steps):
        for where, name in step.media_fixtures():
            loc: Loc = ("steps", index, step.kind, *where)
            folder = media_fixture(out.path, "")
            found, why = confined(folder, name)
            if found is not None:
                continue
            if media_fixture(out.path, name).is_symlink() or why != "not found":
                out.error(f"media fixture {name!r} in {folder}: {why}", safe_yaml.locate(root, loc, at_key=False), loc)
                continue
            known = ", ".join(sorted(p.name for p in folder.glob("*") if p.is_file() and p.suffix != ".py")) \
                if folder.is_dir() else "none"
            out.error(f"no media fixture {name!r} in {folder} (known: {known})",
                      safe_yaml.locate(root, loc, at_key=False), loc)


def _load_file(path: Path, rule_cache: dict[str, list[str]] | None = None) -> _Loaded:
    out = _Loaded(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        out.error(f"not UTF-8 text: {exc.reason} at byte {exc.start}")
        return out
    except OSError as exc:
        out.error(f"cannot read: {exc.strerror or exc}")
        return out

    try:
        root, data = safe_yaml.compose(text)
        if root is not None:
            for key_node, dup_loc, first in _duplicate_keys(root, (), set()):
                out.error(f"duplicate key (first at line {first.start_mark.line + 1})", key_node, dup_loc)
    except safe_yaml.YAMLProblem as exc:
        out.errors.append(ScenarioError(exc.message, path=path, line=exc.line, column=exc.column))
        return out
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        if "expected a single document" in problem:
            problem = "a file holds one scenario; found several YAML documents (split them into files)"
        out.errors.append(
            ScenarioError(
                f"YAML syntax error: {problem}",
                path=path,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            )
        )
        return out
    except yaml.YAMLError as exc:
        out.error(f"YAML error: {' '.join(str(exc).split())}")
        return out
    out.root = root

    if data is None:
        out.error("empty file: expected a scenario (a mapping with id, title, profiles and steps)")
        return out
    if isinstance(data, list):
        out.error("a file holds one scenario (a mapping); found a list — put each scenario in its own file", root)
        return out
    if not isinstance(data, dict):
        out.error(f"expected a scenario mapping at the top level, found {type(data).__name__}", root)
        return out

    try:
        out.scenario = Scenario.model_validate(data, context={"source_path": path})
    except ValidationError as exc:
        for problem in safe_yaml.field_errors(exc, root):
            out.error(describe_error(problem.error), problem.node, tuple(p for p in problem.loc if p != "[key]"))
    if out.scenario is not None:
        _check_rule_files(out, root, rule_cache)
        _check_hold_names(out, root)
        _check_media_fixtures(out, root)
    # A duplicate key makes the parsed value ambiguous, so don't hand out a scenario built from it.
    if out.errors:
        out.scenario = None
    # pydantic reports in schema order, cross-reference checks come last; a reader goes top to bottom.
    out.errors.sort(key=lambda e: (e.line or 0, e.column or 0))
    return out


# --- many files --------------------------------------------------------------------------------------------


def _expand(paths: Iterable[str | Path], errors: list[ScenarioError]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        try:
            found = files_in(p) if p.is_dir() else None
        except OSError as exc:  # a directory we may not list or enter: one line, not a traceback
            errors.append(ScenarioError(f"cannot read this directory: {exc.strerror or exc}", path=p))
            continue
        if found is not None:
            if not found:
                errors.append(ScenarioError("no scenario files (*.yaml, *.yml) in this directory", path=p))
        elif p.exists() or p.is_symlink():
            found = [p]
        else:
            errors.append(ScenarioError("no such file or directory", path=p))
            found = []
        for f in found:
            try:
                key = f.resolve()
            except (RuntimeError, OSError):  # a symlink loop (RuntimeError on 3.11): read, and reported, as it is
                key = f.absolute()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files


def _as_paths(dir_or_paths: str | Path | Iterable[str | Path]) -> list[str | Path]:
    if isinstance(dir_or_paths, str | Path):
        return [dir_or_paths]
    return list(dir_or_paths)


def _plan_order(scenario: Scenario) -> tuple[bool, str, str]:
    path = scenario.source_path or Path()
    return (scenario.id != CANARY, path.name, str(path))


def _load_all(dir_or_paths: str | Path | Iterable[str | Path]) -> tuple[list[Scenario], list[ScenarioError]]:
    errors: list[ScenarioError] = []
    files = _expand(_as_paths(dir_or_paths), errors)
    return _collect(_parse(files), errors)


def _parse(files: list[Path]) -> list[_Loaded]:
    rule_cache: dict[str, list[str]] = {}  # many scenarios name the same rule file
    return [_load_file(f, rule_cache) for f in sorted(files, key=lambda f: (f.name, str(f)))]


def _collect(loaded: list[_Loaded], errors: list[ScenarioError]) -> tuple[list[Scenario], list[ScenarioError]]:
    """The files' scenarios in plan order, and every problem: each file's own, then an id in two files."""
    scenarios: list[Scenario] = []
    first_by_id: dict[str, _Loaded] = {}
    for item in loaded:
        errors.extend(item.errors)
        if item.scenario is None:
            continue
        sid = item.scenario.id
        if sid in first_by_id:
            first = first_by_id[sid]
            first_line = safe_yaml.locate(first.root, ("id",), at_key=False).start_mark.line + 1 if first.root else 1
            node = safe_yaml.locate(item.root, ("id",), at_key=False) if item.root else None
            item.error(f"duplicate scenario id {sid!r} (also in {first.path}:{first_line})", node, ("id",))
            errors.append(item.errors[-1])
            continue
        first_by_id[sid] = item
        scenarios.append(item.scenario)
    scenarios.sort(key=_plan_order)
    return scenarios, errors


def load_scenario(path: str | Path) -> Scenario:
    """Load one file; raises ScenarioErrors (a ScenarioError) listing every problem found in it."""
    item = _load_file(Path(path))
    if item.errors or item.scenario is None:
        raise ScenarioErrors(item.errors)
    return item.scenario


def load_scenarios(dir_or_paths: str | Path | Iterable[str | Path]) -> list[Scenario]:
    """Load a directory (its *.yaml / *.yml, not recursive) and/or files, in plan order (see module doc)."""
    scenarios, errors = _load_all(dir_or_paths)
    if errors:
        raise ScenarioErrors(errors)
    return scenarios


def load_chosen(dir_or_paths: str | Path | Iterable[str | Path], chosen: Callable[[Head], bool],
                may_skip: Callable[[Path], bool]) -> list[Scenario] | None:
    """`load_scenarios`, except that a file `may_skip` allows (the built-in library's, which the test suite
    validates) is not parsed when `chosen` refuses its head (qa.scenario.heads): ScenarioErrors lists every problem
    of the files parsed, as `load_scenarios` would. None when the choice cannot be made that cheaply (a path
    problem, a file whose head must be parsed to be known, an id in two heads) or a parsed file's scenario
    disagrees with its head: the caller then loads them all, and its messages are the ones it always gave."""
    errors: list[ScenarioError] = []
    files = _expand(_as_paths(dir_or_paths), errors)
    heads = {path: _head_of(path) for path in files}
    if errors or None in heads.values() or len({h.id for h in heads.values() if h}) != len(heads):
        return None
    loaded = _parse([path for path, found in heads.items() if not may_skip(path) or (found and chosen(found))])
    if any(item.scenario is not None and heads[item.path] != Head(item.scenario.id, tuple(item.scenario.profiles))
           for item in loaded):
        return None
    scenarios, errors = _collect(loaded, errors)
    if errors:
        raise ScenarioErrors(errors)
    return scenarios


def _head_of(path: Path) -> Head | None:
    try:
        return head(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def validate_paths(paths: str | Path | Iterable[str | Path]) -> list[ScenarioError]:
    """Every problem across all the given files and directories; empty when all of them are valid."""
    return _load_all(paths)[1]


def located(scenario: Any, loc: Loc, exc: Exception) -> ScenarioError:
    """A configuration problem found while the scenario runs (a fixture swapped for a link, a template that does
    not render with this scenario's settings), placed where its file asks for it: path:line: field: message."""
    if isinstance(exc, ScenarioError):
        return exc
    path = getattr(scenario, "source_path", None)
    line = None
    if path is not None:
        try:
            root, _ = safe_yaml.compose(Path(path).read_text(encoding="utf-8"))
            line = safe_yaml.locate(root, loc, at_key=True).start_mark.line + 1 if root is not None else None
        except (OSError, ValueError, yaml.YAMLError, safe_yaml.YAMLProblem):  # changed since it loaded: the field says
            line = None
    return ScenarioError(str(exc), path=path, line=line, field=safe_yaml.field_path(loc))
