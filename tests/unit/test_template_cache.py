"""The report templates compiled once per machine (qa.report.template_cache): a run after the first reuses the
compiled code, renders the same text, never takes code compiled under other options, and a cache it cannot use is
no error."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2 import Environment, PackageLoader, StrictUndefined

from qa.report import html, markdown, template_cache
from qa.report.template_cache import TemplateCache, flavor
from qa.report.writer import load_summary

TEMPLATE = markdown.TEMPLATE
FIXTURE = Path(__file__).parent / "report_fixtures" / "narrow-scope.json"


def _env(cache_dir: Path | None, **options: object) -> Environment:
    """The markdown report's environment as qa.report.markdown makes it, with its cache in `cache_dir`."""
    settings: dict[str, object] = {"trim_blocks": True, "lstrip_blocks": True, **options}
    env = Environment(loader=PackageLoader("qa.report", "templates"), autoescape=False, undefined=StrictUndefined,
                      keep_trailing_newline=True, **settings)  # type: ignore[arg-type]
    env.filters.update(markdown._environment().filters)
    if cache_dir is not None:
        env.bytecode_cache = TemplateCache(flavor(env, TEMPLATE), str(cache_dir))
    return env


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The templates Jinja compiled from source (a cache hit compiles nothing)."""
    seen: list[str] = []
    real = Environment.compile

    def counting(self: Environment, source: str, name: str | None = None, *args: object, **kwargs: object) -> object:
        seen.append(str(name))
        return real(self, source, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Environment, "compile", counting)
    return seen


def test_a_second_run_reuses_the_compiled_template_and_renders_the_same(tmp_path: Path,
                                                                        compiles: list[str]) -> None:
    view = markdown.build_view(load_summary(FIXTURE))
    first = _env(tmp_path).get_template(TEMPLATE).render(**view)
    assert compiles == [TEMPLATE] and len(list(tmp_path.iterdir())) == 1
    second = _env(tmp_path).get_template(TEMPLATE).render(**view)  # a new environment: as a new run's
    assert compiles == [TEMPLATE], "the second environment compiled the template again"
    assert second == first == _env(None).get_template(TEMPLATE).render(**view)


def test_code_compiled_under_other_options_is_never_served(tmp_path: Path, compiles: list[str]) -> None:
    _env(tmp_path).get_template(TEMPLATE)
    _env(tmp_path, trim_blocks=False).get_template(TEMPLATE)
    assert compiles == [TEMPLATE, TEMPLATE], "whitespace control shapes the code: not the same entry"
    assert flavor(_env(None), TEMPLATE) != flavor(_env(None, lstrip_blocks=False), TEMPLATE)
    assert flavor(html._environment(), html.TEMPLATE) != flavor(markdown._environment(), TEMPLATE), "autoescape"


def test_a_cache_it_cannot_read_or_write_is_a_compile_not_an_error(tmp_path: Path, compiles: list[str]) -> None:
    env = _env(tmp_path)
    env.get_template(TEMPLATE)
    for entry in tmp_path.iterdir():
        entry.write_bytes(entry.read_bytes()[:40])  # damaged: cut inside its checksum
    assert _env(tmp_path).get_template(TEMPLATE) is not None
    assert compiles == [TEMPLATE, TEMPLATE]
    gone = _env(tmp_path / "no-such-dir")  # every write fails
    assert gone.get_template(TEMPLATE) is not None and len(compiles) == 3


def test_the_reports_environments_have_a_cache() -> None:
    for module in (markdown, html):
        assert isinstance(module._environment().bytecode_cache, TemplateCache), module.__name__


def test_no_safe_directory_is_no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsafe(*args: object) -> None:
        raise RuntimeError("the cache directory is owned by someone else")

    monkeypatch.setattr(TemplateCache, "__init__", unsafe)
    env = Environment()
    assert template_cache.use_cache(env, "x.j2") is env and env.bytecode_cache is None


def test_another_jinja_version_is_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jinja checks its bytecode format version and Python's, not its own release: code one release compiled (its
    runtime helpers, its generated names) is never served to another."""
    env = _env(None)
    before = flavor(env, TEMPLATE)
    monkeypatch.setattr(jinja2, "__version__", "0.0.1")
    assert flavor(env, TEMPLATE) != before
