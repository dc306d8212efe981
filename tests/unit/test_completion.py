"""`matrix-qa completion bash|zsh` (qa.completion): the printed script, sourced into a real shell, completes the
subcommands, every `run` flag, a flag's choices, files after a path flag, and nothing after a flag whose value
only the user knows. The shells run with COMP_WORDS/COMP_CWORD set as their completion systems set them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qa.cli import build_parser, main
from qa.completion import describe, script

HARNESS = """
source {script}
{setup}
c() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _matrix_qa; echo "${{COMPREPLY[*]}}"; }}
"""


def complete(shell: str, lines: list[list[str]], tmp_path: Path) -> list[list[str]]:
    """Each line's completions (the last word is the one being completed), from `shell` with the script sourced.
    zsh's bashcompinit leaves matching the typed prefix to zsh's own matcher; here the test matches it."""
    path = tmp_path / f"completion.{shell}"
    path.write_text(script(shell, build_parser()))
    setup = "setopt ksharrays" if shell == "zsh" else ""  # what bashcompinit sets around the function
    calls = "\n".join("c " + " ".join(f"'{w}'" for w in words) for words in lines)
    cmd = [shell, "-f"] if shell == "zsh" else [shell, "--norc", "--noprofile"]
    proc = subprocess.run([*cmd, "-c", HARNESS.format(script=path, setup=setup) + calls], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    out = [line.split() for line in proc.stdout.splitlines()]
    return [[w for w in got if w.startswith(words[-1])] for words, got in zip(lines, out, strict=True)]


LINES = [
    ["matrix-qa", "r"],                       # subcommands
    ["matrix-qa", "run", "--prov"],           # run's flags
    ["matrix-qa", "run", "--provider", ""],   # a flag's choices
    ["matrix-qa", "run", "--jobs", ""],       # a value only the user knows: nothing
    ["matrix-qa", "run", "--bot", "my"],      # a path flag: files
    ["matrix-qa", "--version", "run", "-k", "x", "--bot-s"],  # the subcommand found past a top-level flag
    ["matrix-qa", "schema", ""],              # a positional's choices
    ["matrix-qa", "list", "my"],              # list's PATH: files
    ["matrix-qa", "completion", ""],
    ["matrix-qa", "list", "-"],               # long flags only (no -h, -k)
    ["matrix-qa", "--v"],                     # the top level's flags
    ["matrix-qa", "run", "my"],               # run takes no files: flags (none start with "my")
    ["matrix-qa", "run", "--fail-fast", "--jo"],  # a flag without a value is no value's flag
    ["matrix-qa", "doctor", "my"],            # doctor and compare parse their own lines: files
    ["matrix-qa", "compare", "my"],
]
EXPECTED = [
    ["run", "report"],
    ["--provider", "--provider-rules"],
    ["mock", "live", "replay"],
    [],
    ["my-bot.yaml"],
    ["--bot-set"],
    ["scenario", "bot", "rules", "cassette"],
    ["my-bot.yaml"],
    ["bash", "zsh"],
    ["--help", "--profile", "--keyword", "--json", "--config"],
    ["--version"],
    [],
    ["--jobs"],
    ["my-bot.yaml"],
    ["my-bot.yaml"],
]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_completes_commands_flags_and_values(shell: str, tmp_path: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed here")
    (tmp_path / "my-bot.yaml").write_text("name: x\n")
    assert complete(shell, LINES, tmp_path) == EXPECTED


def test_every_run_flag_completes_in_bash(tmp_path: Path) -> None:
    run = describe(build_parser())["run"]
    assert len(run.flags) > 30
    got = complete("bash", [["matrix-qa", "run", flag] for flag in run.flags], tmp_path)
    assert all(flag in words for flag, words in zip(run.flags, got, strict=True))


def test_zsh_registers_the_function_for_matrix_qa(tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed here")
    path = tmp_path / "completion.zsh"
    path.write_text(script("zsh", build_parser()))
    proc = subprocess.run(["zsh", "-f", "-c", f"source {path}; print -r -- $_comps[matrix-qa]"], capture_output=True,
                          text=True, timeout=30, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=False)
    assert "_matrix_qa" in proc.stdout, proc.stdout + proc.stderr


def test_the_command_prints_the_script_and_refuses_another_shell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete -F _matrix_qa matrix-qa" in out and "--scenarios-dir" in out
    with pytest.raises(SystemExit) as exc:
        main(["completion", "fish"])
    assert exc.value.code == 2
    with pytest.raises(ValueError) as err:
        script("fish", build_parser())
    assert str(err.value) == "no completion for 'fish'; choose one of bash, zsh"
