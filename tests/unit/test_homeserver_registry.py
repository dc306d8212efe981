"""The homeserver backend registry: the CLI's options and the run's checks come from it, and a backend
registered from outside qa/ (tests/standin_backend.py) is chosen, checked, started and cleaned up like the
built-in ones. No server is started here (tests/integration/test_backend_registry.py boots one)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qa.run as run_module
from qa.cli import build_parser, main
from qa.harness.output import Output
from qa.homeserver import registry
from qa.kernel.errors import ConfigError
from qa.run import Run, RunOptions
from qa.run.lifecycle import kill_everything
from qa.run.options import check_backend_options, preflight
from tests import standin_backend
from tests.standin_backend import BACKEND


@pytest.fixture
def standin() -> Iterator[registry.Backend]:
    standin_backend.CALLS.clear()
    registry.register(BACKEND)
    yield BACKEND
    registry.unregister(BACKEND.name)


def run_parser_actions() -> dict[str, Any]:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    return {flag: action for action in run._actions for flag in action.option_strings}


def refusal(**options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        check_backend_options(RunOptions(scenario_paths=[], **options))
    return str(caught.value)


# --- the built-in backends, as the CLI and the checks show them ------------------------------------------------


def test_the_builtin_backends_in_order_and_the_help_built_from_them() -> None:
    assert [b.name for b in registry.backends()][:3] == ["synapse", "external", "tuwunel"]
    actions = run_parser_actions()
    assert actions["--homeserver"].choices == ["synapse", "tuwunel"], "external is chosen by --homeserver-url"
    assert actions["--homeserver"].help == ("homeserver backend: synapse (the default: embedded, a child process) "
                                            "or tuwunel (a Docker container; needs a Docker engine)")
    assert actions["--tuwunel-image"].metavar == "IMAGE" and actions["--homeserver-url"].metavar == "URL"
    assert actions["--registration-token"].default is None


def test_the_order_does_not_depend_on_which_backend_module_was_imported_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `import qa.homeserver.tuwunel` registers tuwunel before the registry loads the others: the order, and with
    # it the help and the misplaced-flag message, must not follow.
    every = {b.name: b for b in registry.backends()}
    monkeypatch.setattr(registry, "_REGISTERED", dict(reversed(every.items())))
    assert [b.name for b in registry.backends()] == ["synapse", "external", "tuwunel", "image"]


@pytest.mark.parametrize(("explicit", "settings", "chosen"), [
    (None, {}, "synapse"),
    (None, {"homeserver_url": ""}, "synapse"),
    (None, {"homeserver_url": "https://matrix.example.org"}, "external"),
    ("tuwunel", {"homeserver_url": "https://matrix.example.org"}, "tuwunel"),
    ("synapse", {}, "synapse"),
])
def test_choose(explicit: str | None, settings: dict[str, Any], chosen: str) -> None:
    assert registry.choose(explicit, settings) == chosen


def test_the_cli_puts_every_backend_option_into_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunOptions] = []
    monkeypatch.setattr(run_module, "run_sync", lambda options: seen.append(options) or 0)
    assert main(["run", "--homeserver-url", "https://matrix.example.org", "--registration-token", "t" * 12,
                 "--homeserver-port", "8448"]) == 0
    (options,) = seen
    assert (options.homeserver, options.homeserver_port) == ("external", 8448)
    assert options.homeserver_settings == {"homeserver_url": "https://matrix.example.org",
                                           "registration_token": "t" * 12, "registration_shared_secret": None,
                                           "tuwunel_image": None, "registration": None,
                                           "homeserver_env": None, "homeserver_image": None}


@pytest.mark.parametrize(("options", "message"), [
    ({"homeserver_settings": {"tuwunel_image": "x:1"}},
     "not used by this run (--homeserver synapse, --provider mock): --tuwunel-image"),
    ({"homeserver_settings": {"registration_token": "tok", "tuwunel_image": "x:1"}},
     "not used by this run (--homeserver synapse, --provider mock): --registration-token, --tuwunel-image"),
    ({"homeserver": "tuwunel", "homeserver_settings": {"registration_shared_secret": "s"}, "model": "m"},
     "not used by this run (--homeserver tuwunel, --provider mock): --model, --registration-shared-secret"),
    ({"homeserver": "tuwunel", "homeserver_settings": {"homeserver_url": "https://x.org", "tuwunel_image": "x:1"}},
     "--homeserver-url points at an existing server; it cannot be combined with --homeserver tuwunel"),
    ({"homeserver": "external", "homeserver_settings": {"homeserver_url": "https://x.org", "tuwunel_image": "x:1"}},
     "not used by this run (--homeserver external, --provider mock): --tuwunel-image"),
])
def test_a_backends_flags_given_to_a_run_on_another_are_refused_as_before(options: dict[str, Any],
                                                                         message: str) -> None:
    assert refusal(**options) == message


def test_the_flags_of_the_backend_in_use_are_its_own() -> None:
    check_backend_options(RunOptions(scenario_paths=[], homeserver="tuwunel",
                                     homeserver_settings={"tuwunel_image": "x:1"}))
    check_backend_options(RunOptions(scenario_paths=[], homeserver="external", homeserver_settings={
        "homeserver_url": "https://x.org", "registration_token": "t", "registration_shared_secret": "s"}))


def test_an_unknown_backend_names_every_way_to_choose_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        preflight(RunOptions(scenario_paths=[], homeserver="dendrite"), 1, tmp_path / "out", {})
    assert str(caught.value) == ("--homeserver 'dendrite' is not supported; use synapse (the default), tuwunel, "
                                 "--homeserver-url URL, or --homeserver-image IMAGE")


def test_an_external_backend_without_a_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^an external homeserver needs --homeserver-url URL$"):
        preflight(RunOptions(scenario_paths=[], homeserver="external"), 1, tmp_path / "out", {})


def test_an_external_backends_secrets_come_back_from_the_preflight(tmp_path: Path) -> None:
    options = RunOptions(scenario_paths=[], homeserver="external", homeserver_settings={
        "homeserver_url": "https://matrix.example.org", "registration_token": "token-0123456789"})
    env = {"MATRIX_QA_REGISTRATION_SHARED_SECRET": "secret-0123456789"}
    assert preflight(options, 1, tmp_path / "out", env) == (None, ["token-0123456789", "secret-0123456789"])


def test_registering_a_name_twice_is_refused(standin: registry.Backend) -> None:
    with pytest.raises(ValueError, match="'standin' is already registered"):
        registry.register(standin)


# --- a backend from outside qa/ ------------------------------------------------------------------------------


def test_a_registered_backend_is_a_choice_with_its_own_options(standin: registry.Backend,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    actions = run_parser_actions()
    assert actions["--homeserver"].choices == ["synapse", "tuwunel", "standin"]
    assert actions["--homeserver"].help.endswith(
        "tuwunel (a Docker container; needs a Docker engine) or standin (the embedded Synapse under another name)")
    assert actions["--standin-motto"].help == "a setting only the stand-in reads"
    seen: list[RunOptions] = []
    monkeypatch.setattr(run_module, "run_sync", lambda options: seen.append(options) or 0)
    assert main(["run", "--homeserver", "standin", "--standin-motto", "hello"]) == 0
    (options,) = seen
    assert options.homeserver == "standin" and options.homeserver_settings["standin_motto"] == "hello"
    with pytest.raises(ConfigError) as caught:
        preflight(RunOptions(scenario_paths=[], homeserver="dendrite"), 1, Path("unused"), {})
    assert ("use synapse (the default), tuwunel, standin, --homeserver-url URL, or --homeserver-image IMAGE"
            in str(caught.value))


def test_its_flags_are_refused_on_another_backend_and_its_preflight_brings_its_secret(
        standin: registry.Backend, tmp_path: Path) -> None:
    assert refusal(homeserver_settings={"standin_motto": "hello"}) == (
        "not used by this run (--homeserver synapse, --provider mock): --standin-motto")
    options = RunOptions(scenario_paths=[], homeserver="standin", homeserver_settings={"standin_secret": "s3cret-x"})
    check_backend_options(options)
    assert preflight(options, 1, tmp_path / "out", {}) == (None, ["s3cret-x"])
    assert standin_backend.CALLS == ["preflight"]


def test_the_run_starts_it_and_its_last_resort_runs(standin: registry.Backend, tmp_path: Path) -> None:
    """The run's path up to the homeserver's start, with the stand-in: built from the registry with its
    settings, its secret redacted from what it wrote, and its last resort called on the way out."""
    started: list[str] = []

    async def refuse_to_start(self: standin_backend.StandInHomeserver) -> None:
        started.append(self.kind)
        raise ConfigError("the stand-in does not start in a unit test")

    terminal = io.StringIO()
    options = RunOptions(scenario_ids=["canary"], output_dir=tmp_path / "out", homeserver="standin",
                         homeserver_settings={"standin_secret": "s3cret-standin", "standin_motto": None},
                         fork_server=False)
    run = Run(options, Output(terminal))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(standin_backend.StandInHomeserver, "start", refuse_to_start)
        assert asyncio.run(run.execute()) == 2
    assert started == ["standin"] and standin_backend.CALLS == ["preflight", "create", "last resort"]
    written = (tmp_path / "out" / "homeserver" / "standin-settings.json").read_text()
    assert "s3cret-standin" not in written and "[REDACTED]" in written, "the artifacts sweep redacts its secret"
    assert "starting standin homeserver" in terminal.getvalue()
    kill_everything()
    assert standin_backend.CALLS[-1] == "last resort"
