"""matrix-qa's pytest plugin (entry point `matrix_qa`; `-p no:matrix_qa` turns it off): the `matrix_qa`
fixture, scenario files as test items, and the session's shared homeserver, provider and fork server.

Loaded in every pytest session of an environment where matrix-qa is installed, so this module imports nothing
heavy and does nothing until a test asks for the fixture or a scenario file is collected: the harness (pydantic
models, the Matrix client, the homeserver) is imported and started then. Docs: docs/pytest.md.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

OPTIONS = (  # (flag, ini name, help)
    ("--matrix-qa-bot", "matrix_qa_bot", "bot file of the bot under test (default: the embedded agent)"),
    ("--matrix-qa-homeserver", "matrix_qa_homeserver", "homeserver backend, as `matrix-qa run --homeserver`"),
    ("--matrix-qa-homeserver-url", "matrix_qa_homeserver_url",
     "test on a homeserver you already run, as `matrix-qa run --homeserver-url` (nothing of it is touched but the "
     "session's own users and rooms)"),
    ("--matrix-qa-registration", "matrix_qa_registration",
     "how test users are registered there: open, token or shared-secret, as `matrix-qa run --registration`; the "
     "secret only from env MATRIX_QA_REGISTRATION_TOKEN / MATRIX_QA_REGISTRATION_SHARED_SECRET"),
    ("--matrix-qa-provider", "matrix_qa_provider", "model provider: mock (default), replay or live"),
    ("--matrix-qa-cassettes", "matrix_qa_cassettes", "cassette directory for --matrix-qa-provider replay"),
    ("--matrix-qa-report", "matrix_qa_report", "write the run's summary, markdown report and JUnit here"),
    ("--matrix-qa-scenarios", "matrix_qa_scenarios",
     "collect this directory's scenario files as tests (`builtin`: the built-in library)"),
)
SESSION_KEY = pytest.StashKey[Any]()
FIXTURE_KEY = pytest.StashKey[Any]()
GIVEN_KEY = pytest.StashKey[list[pytest.Item]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("matrix-qa", "matrix-qa: Matrix bot QA (docs/pytest.md)")
    for flag, ini, text in OPTIONS:
        kwargs: dict[str, Any] = {"action": "append"} if ini == "matrix_qa_scenarios" else {}
        group.addoption(flag, dest=ini, default=None, help=text, **kwargs)
        parser.addini(ini, text, type="args" if ini == "matrix_qa_scenarios" else "string")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix_qa(bot=FILE): run this test's scenario against another bot file")


# The options the matrix-qa config file may also set, by its keys (`run`'s flags): the bot, homeserver, provider
# and cassettes as `run` reads them, and the report directory as run's output dir. Not `scenarios-dir`: a file
# that adds scenarios to `run` must not add them to every pytest session of the repository (`pytest tests/unit`).
# Never the registration token or shared secret (run's file may hold them): the session takes them from the
# environment only, so no committed file and no command line (`ps`) carries them into every pytest session.
FILE_KEYS = {"matrix_qa_bot": "bot", "matrix_qa_homeserver": "homeserver", "matrix_qa_provider": "provider",
             "matrix_qa_cassettes": "cassettes", "matrix_qa_report": "output-dir",
             "matrix_qa_homeserver_url": "homeserver-url", "matrix_qa_registration": "registration"}
FILE_STASH = pytest.StashKey[Any]()


def option(config: pytest.Config, ini: str) -> Any:
    """A matrix-qa option: the command line wins over [tool.pytest.ini_options], which wins over the matrix-qa
    config file ([tool.matrix-qa] or matrix-qa.toml, found from where pytest started upward)."""
    value = config.getoption(ini)
    if value not in (None, []):
        return value
    if config.getini(ini):
        return config.getini(ini)
    return config_file_settings(config)[1].get(ini) if ini in FILE_KEYS else None


def config_file_settings(config: pytest.Config) -> tuple[Any, dict[str, Any]]:
    """(the matrix-qa config file or None, its settings by ini name), read once and checked as `run` checks it:
    a bad key or value ends the session (exit 2) naming the file and the key."""
    found = config.stash.get(FILE_STASH, None)
    if found is None:
        from qa.cli_run import _standalone, apply_config
        from qa.config_file import find_config_file, load_config_file
        from qa.kernel.errors import QAError

        path = find_config_file(config.invocation_params.dir)
        found = (None, {})
        if path is not None:
            try:
                file = load_config_file(path)
                args = _standalone().parse_args([])
                applied = apply_config(args, [], file)
            except QAError as exc:
                pytest.exit(f"matrix-qa: {exc}", returncode=2)
            found = (file, {ini: getattr(args, key.replace("-", "_")) for ini, key in FILE_KEYS.items()
                            if key in applied})
        config.stash[FILE_STASH] = found
    return found  # type: ignore[no-any-return]


def homeserver_settings(config: pytest.Config) -> dict[str, Any]:
    """An existing homeserver's settings, keyed as run's (RunOptions.homeserver_settings): the URL and the
    registration mode from the options, the token or shared secret from the environment only. Checked by run's
    own code (qa.homeserver.external) before anything starts; a bad value ends the session (exit 2) naming the
    plugin's option."""
    from qa.homeserver.external import resolve_external_settings
    from qa.kernel.errors import ConfigError

    url, mode = option(config, "matrix_qa_homeserver_url"), option(config, "matrix_qa_registration")
    if url is None and mode is None:
        return {}
    try:
        if not url:
            raise ConfigError("--registration needs --homeserver-url URL (the server to register the users on)")
        resolve_external_settings(url=url, registration_token=None, shared_secret=None, env=os.environ,
                                  registration=mode)
    except ConfigError as exc:
        pytest.exit("matrix-qa: " + _RUN_FLAG.sub(r"--matrix-qa-\1", str(exc)), returncode=2)
    return {"homeserver_url": url, "registration": mode}


# run's words for the two options, in the plugin's (not --registration-token: the plugin has no secret option).
_RUN_FLAG = re.compile(r"--(homeserver-url|registration)\b(?!-)")


# --- scenario files as items -----------------------------------------------------------------------------------

_SCENARIO_SNIFF = re.compile(r"^(id|steps)\s*:", re.MULTILINE)


def _scenario_dirs(config: pytest.Config) -> list[Path]:
    found: list[Path] = []
    for value in option(config, "matrix_qa_scenarios") or []:
        if str(value) == "builtin":
            from qa.library import builtin_scenarios_dir

            builtin = builtin_scenarios_dir()
            if builtin is not None:
                found.append(builtin.resolve())
        else:
            found.append(Path(value).resolve())
    return found


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A scenario file is collected when named on the command line, when its folder is (`pytest scenarios/`)
    and it looks like a scenario (an `id:` or `steps:` key at the top), or when it is under a directory given
    by --matrix-qa-scenarios. YAML elsewhere (bot files, fixtures) is left alone."""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    session = parent.session
    named = session.isinitpath(file_path)
    in_named_dir = session.isinitpath(file_path.parent)
    in_option_dir = any(file_path.resolve().is_relative_to(d) for d in _scenario_dirs(parent.config))
    if not (named or in_named_dir or in_option_dir):
        return None
    if not named:
        try:
            if not _SCENARIO_SNIFF.search(file_path.read_text(encoding="utf-8", errors="replace")):
                return None
        except OSError:
            return None
    from qa.pytest_plugin.items import ScenarioFile

    return ScenarioFile.from_parent(parent, path=file_path)  # type: ignore[no-any-return]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """--matrix-qa-scenarios DIR outside the paths pytest was given: its files are collected too."""
    extra = [d for d in _scenario_dirs(config) if not any(session.isinitpath(p) for p in (d, *d.parents))]
    if not extra:
        return
    from qa.pytest_plugin.items import ScenarioFile

    for directory in extra:
        for path in sorted(directory.glob("*.y*ml")):
            node = ScenarioFile.from_parent(session, path=path)
            items.extend(session.genitems(node))  # type: ignore[arg-type]


# --- the session and the fixture -------------------------------------------------------------------------------


def report_dir(given: Path, worker: str) -> Path:
    """Where this session writes its record. Under pytest-xdist every worker is a session of its own with its
    own tests: each writes DIR/<worker id>/, so no worker's record (a pass) overwrites another's (a failure)."""
    return (given / worker).resolve() if worker else given.resolve()


def xdist_worker(config: pytest.Config) -> str:
    """This process's xdist worker id, or "" when it is no worker. Read from the config, not from
    PYTEST_XDIST_WORKER, which a pytest started by a worker's test inherits without being a worker itself."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput.get("workerid", "")) if isinstance(workerinput, dict) else ""


def qa_session(config: pytest.Config, items: list[pytest.Item]) -> Any:
    """The session's shared run, started by the first test that needs it."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        from qa.pytest_plugin.session import QASession, default_artifact_dir
        from qa.run import RunOptions

        report = option(config, "matrix_qa_report")
        options = RunOptions(
            bot_file=Path(option(config, "matrix_qa_bot")) if option(config, "matrix_qa_bot") else None,
            provider=option(config, "matrix_qa_provider") or "mock",
            cassettes_dir=Path(option(config, "matrix_qa_cassettes")) if option(config, "matrix_qa_cassettes")
            else None,
            output_dir=report_dir(Path(report), xdist_worker(config)) if report else default_artifact_dir(config),
            argv=["pytest", *config.invocation_params.args], profile="pytest", jobs=1)
        file, settings = config_file_settings(config)
        if file is not None:  # the summary says which file was read, as `run`'s does
            used = {FILE_KEYS[ini] for ini in settings}
            options.config_file = file.path
            options.config_settings = {key: value for key, value in file.values.items() if key in used}
        from qa.homeserver import registry

        options.homeserver_settings = homeserver_settings(config)
        options.homeserver = registry.choose(option(config, "matrix_qa_homeserver"), options.homeserver_settings)
        from qa.kernel.errors import QAError

        try:
            session = QASession(options)
        except QAError as exc:  # MATRIX_QA_HARNESS_LOOP names no loop it can make: as `run`, exit 2
            pytest.exit(f"matrix-qa: {exc}", returncode=2)
        config.stash[SESSION_KEY] = session
        # Also when the session's end is cut short (a second Ctrl-C, an error in another plugin's teardown).
        config.add_cleanup(session.stop)
    if not session.started:
        from qa.kernel.errors import QAError
        from qa.pytest_plugin.items import plan_of

        try:
            session.start(plan_of(items))
        except QAError as exc:  # a bad bot file or option, a homeserver that won't start: as `run`, exit 2
            pytest.exit(f"matrix-qa: {exc}", returncode=2)
    if session.base is None:
        pytest.exit("matrix-qa: the session's homeserver and provider did not start (see above)", returncode=2)
    return session


@pytest.fixture
def matrix_qa(request: pytest.FixtureRequest) -> Any:
    """One test, one scenario: its own users, rooms, bot process, state dir, mock scope and trace, on the
    session's homeserver. See docs/pytest.md."""
    from qa.pytest_plugin.fixture import MatrixQA
    from qa.pytest_plugin.items import bot_file_of, scenario_id_of

    session = qa_session(request.config, request.session.items)
    node = request.node
    qa = MatrixQA(session, scenario_id_of(node), node.nodeid, bot_file_of(node))
    node.stash[FIXTURE_KEY] = qa
    yield qa
    if qa.result is None:
        session.call(qa.finish())


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """An `async def` test that uses the fixture and that no other plugin runs (pytest-asyncio, anyio) runs on
    the session's loop, so no async plugin is needed."""
    if "matrix_qa" not in pyfuncitem.fixturenames or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    wanted = inspect.signature(pyfuncitem.obj).parameters
    args = {name: value for name, value in pyfuncitem.funcargs.items() if name in wanted}
    qa_session(pyfuncitem.config, pyfuncitem.session.items).call(pyfuncitem.obj(**args))
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """The end of a test's scenario is judged as part of the test (a final check or the lock evidence that
    fails makes the test fail, not error), after its own code passed."""
    qa = item.stash.get(FIXTURE_KEY, None)
    try:
        outcome = yield
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            _session_of(item).interrupted("SIGINT received")
        if qa is not None and qa.result is None:
            qa._session.call(qa.abandon(exc))
        raise
    if qa is not None and qa.result is None:
        qa._session.call(qa.finish())
    return outcome


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> None:
    """Remember each test this process was given: under xdist a worker collects every test but runs only those
    handed to it, and its record must not call the others skipped ("not run: the run stopped early")."""
    item.config.stash.setdefault(GIVEN_KEY, []).append(item)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Every process stopped and the work dir gone, whatever ended the session (Ctrl-C and -x included);
    the record written (to --matrix-qa-report DIR, else beside the artifacts). An xdist worker's record holds
    the tests it was given, so `matrix-qa report --merge DIR/gw*` joins the workers' records into the session's."""
    qa = session.config.stash.get(SESSION_KEY, None)
    if qa is not None:
        if xdist_worker(session.config):
            from qa.pytest_plugin.items import plan_of

            qa.keep_in_plan({s.id for s in plan_of(session.config.stash.get(GIVEN_KEY, []))})
        qa.stop()


def _session_of(item: pytest.Item) -> Any:
    return item.config.stash.get(SESSION_KEY, None) or SimpleNamespace(interrupted=lambda _why: None)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    qa = config.stash.get(SESSION_KEY, None)
    if qa is None or qa.base is None or qa.run is None:
        return
    hs = qa.run.homeserver
    terminalreporter.write_line(
        f"matrix-qa: {qa.tests} scenario(s) on one {getattr(hs, 'kind', '?')} homeserver; "
        f"bot {qa.run.bot_file.name if qa.run.bot_file else '?'}; artifacts {qa.run.dir}")
