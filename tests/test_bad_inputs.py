"""Run every entry of the bad-input corpus (tests/bad_inputs/cases.yaml) through the CLI, in process.

Each must be exit 2 with one line per problem naming the file or flag, and never a traceback. The part of a
run that starts processes is replaced, so an entry that slips past the checks fails here rather than booting
a homeserver. What `run` starts before its checks (the embedded Synapse's interpreter, qa.homeserver.early_synapse,
and the built-in agent's fork server, qa.harness.early_fork_server) is a `sleep` here, and every entry must leave
it stopped and reaped.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from qa import cli
from qa.harness import early_fork_server
from qa.homeserver import early_synapse
from qa.run import Run

CORPUS = Path(__file__).parent / "bad_inputs"
# Read when every pytest process (each xdist worker) collects this file: libyaml's safe loader where PyYAML has it
# (0.21 -> 0.03 CPU-s for the corpus here; the same 213 entries, compared equal), the pure-Python one otherwise.
CASES: list[dict[str, Any]] = yaml.load((CORPUS / "cases.yaml").read_text(encoding="utf-8"),
                                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
# validate ends with this count; it sums the lines above it rather than being an error of its own
_COUNT_LINE = re.compile(r"^\d+ error\(s\)$")


def _expand(value: str, places: dict[str, str]) -> str:
    value = re.sub(r"\{digits:(\d+)\}", lambda m: "9" * int(m.group(1)), value)
    for name, replacement in places.items():
        value = value.replace("{" + name + "}", replacement)
    return value


def _error_lines(stderr: str) -> list[str]:
    # argparse's usage text (first line "usage:", wrapped lines indented) comes before its one error line.
    return [line for line in stderr.splitlines()
            if line and not line.startswith(("usage:", " ")) and not _COUNT_LINE.match(line)]


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    existing = tmp_path / "a-file"
    existing.write_text("not a directory\n")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return {"tmp": str(tmp_path), "file": str(existing), "readonly": str(readonly)}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2(
    case: dict[str, Any], places: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[bool] = []

    async def no_run(self: Run, work: Path) -> None:
        started.append(True)

    monkeypatch.setattr(Run, "_run_all", no_run)
    early: list[early_synapse.EarlySynapse] = []
    real_start = early_synapse.start

    def cheap_start(env: Any) -> early_synapse.EarlySynapse | None:  # a sleep in place of Synapse's imports
        early.append(real_start(env))
        return early[-1]

    monkeypatch.setattr(early_synapse, "command", lambda: ["sleep", "600"])
    monkeypatch.setattr(early_synapse, "start", cheap_start)
    zygotes: list[early_fork_server.EarlyForkServer | None] = []
    real_zygote = early_fork_server.start

    def cheap_zygote(env: Any) -> early_fork_server.EarlyForkServer | None:  # a sleep in place of the agent's imports
        zygotes.append(real_zygote(env))
        return zygotes[-1]

    monkeypatch.setattr(early_fork_server, "command", lambda fd, args: ["sleep", "600"])
    monkeypatch.setattr(early_fork_server, "start", cheap_zygote)
    monkeypatch.chdir(CORPUS)
    for name, value in (case.get("env") or {}).items():
        monkeypatch.setenv(name, _expand(str(value), places))
    argv = [_expand(str(a), places) for a in case["argv"]]

    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()

    assert "Traceback" not in out + err
    assert code == 2, err
    assert not started, "the run started despite the bad input"
    assert all(e is not None and e.returncode is not None for e in early), "a waiting Synapse was left running"
    assert early_synapse.take() is None
    assert all(z is not None and z.returncode is not None for z in zygotes), "a waiting fork server was left running"
    assert early_fork_server.take() is None
    if case.get("early") == "none":  # refused on cheap looks: nothing started early to be thrown away
        assert early == [] and zygotes == [], "the early Synapse or fork server was started for a refused run"
    lines = _error_lines(err)
    assert len(lines) == case.get("errors", 1), lines
    for fragment in case.get("expect", []):
        assert fragment in err, err
    for fragment in case.get("absent", []):
        assert _expand(fragment, places) not in out + err


def test_every_corpus_file_has_an_entry() -> None:
    named = {part for case in CASES for part in case["argv"]}
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.yaml")}
    assert files - named == set(), "corpus files nobody runs"



def test_the_corpus_reads_the_same_with_libyaml_and_without() -> None:
    """CASES is read with libyaml where PyYAML has it: an entry the two loaders read differently (an escape, a
    control character) would feed the product another argv or environment on a machine without libyaml."""
    text = (CORPUS / "cases.yaml").read_text(encoding="utf-8")
    assert yaml.load(text, Loader=yaml.SafeLoader) == CASES
