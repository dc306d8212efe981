"""Shell completion for `matrix-qa`: a bash or zsh script made from the argparse parser itself (no dependency),
so every subcommand, flag and flag choice the parser knows completes, and a new flag completes without an edit here.

`matrix-qa completion bash > ~/.local/share/bash-completion/completions/matrix-qa`, or `eval "$(matrix-qa
completion zsh)"` in ~/.zshrc (docs/cli.md). The script is static: completing costs no Python start.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = ("bash", "zsh")


@dataclass
class Command:
    """What completes after one subcommand: its flags, which of them take a value (and which values), and what
    its positional arguments are."""

    flags: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)  # flag -> its values
    path_flags: list[str] = field(default_factory=list)  # flags whose value is a file or directory
    value_flags: list[str] = field(default_factory=list)  # other flags that take a value: nothing to offer
    positional_choices: list[str] = field(default_factory=list)  # e.g. schema's kinds
    positional_paths: bool = False  # files after the flags (list PATH..., report SUMMARY)


def describe(parser: argparse.ArgumentParser) -> dict[str, Command]:
    """Subcommand -> what completes after it; "" is the top level (the subcommands and --version)."""
    top = Command()
    commands: dict[str, Command] = {"": top}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands[name] = _command(sub)
                top.positional_choices.append(name)
        else:
            top.flags.extend(o for o in action.option_strings if o.startswith("--"))
    return commands


def _command(parser: argparse.ArgumentParser) -> Command:
    command = Command()
    if not parser._actions:  # doctor, compare: no help, no arguments here; their own command lines take paths
        command.positional_paths = True
        return command
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")] or list(action.option_strings)
        if not action.option_strings:  # a positional argument
            if action.choices:
                command.positional_choices.extend(str(c) for c in action.choices)
            else:
                command.positional_paths = True
            continue
        command.flags.extend(longs)
        if action.nargs == 0:
            continue
        if action.choices:
            command.choices.update({flag: [str(c) for c in action.choices] for flag in action.option_strings})
        elif action.type is Path:
            command.path_flags.extend(action.option_strings)
        else:
            command.value_flags.extend(action.option_strings)
    return command


def script(shell: str, parser: argparse.ArgumentParser, prog: str = "matrix-qa") -> str:
    """The completion script for `shell` (bash or zsh; zsh runs the bash function through bashcompinit)."""
    if shell not in SHELLS:
        raise ValueError(f"no completion for {shell!r}; choose one of {', '.join(SHELLS)}")
    function = _bash_function(describe(parser), "_" + prog.replace("-", "_"))
    if shell == "bash":
        return f"# {prog} completion for bash: source this file, or put it in " \
               f"~/.local/share/bash-completion/completions/{prog}\n{function}complete -F _{prog.replace('-', '_')} " \
               f"{prog}\n"
    return (f"# {prog} completion for zsh: eval \"$({prog} completion zsh)\" in ~/.zshrc\n"
            "autoload -U +X compinit && { (( $+functions[compdef] )) || compinit; }\n"
            "autoload -U +X bashcompinit && bashcompinit\n"
            f"{function}complete -F _{prog.replace('-', '_')} {prog}\n")


def _words(items: list[str]) -> str:
    return shlex.quote(" ".join(items))


def _patterns(flags: list[str]) -> str:
    return "|".join(flags)


def _bash_function(commands: dict[str, Command], name: str) -> str:
    """A function over COMP_WORDS/COMP_CWORD: the subcommand is the first word after the program that is not a
    flag; then a flag's values after the flag, the flags after `-`, the positionals otherwise."""
    cases = []
    for cmd, c in commands.items():
        label = shlex.quote(cmd) if cmd else '""'
        values = [f'                {flag}) COMPREPLY=($(compgen -W {_words(choices)} -- "$cur")); return 0;;'
                  for flag, choices in c.choices.items()]
        if c.path_flags:
            values.append(f'                {_patterns(c.path_flags)}) COMPREPLY=($(compgen -f -- "$cur")); return 0;;')
        if c.value_flags:  # a value only the user knows (a number, an id): offer nothing rather than flags
            values.append(f"                {_patterns(c.value_flags)}) COMPREPLY=(); return 0;;")
        flags = f'COMPREPLY=($(compgen -W {_words(c.flags)} -- "$cur"))'
        positional = (f'COMPREPLY=($(compgen -W {_words(c.positional_choices)} -- "$cur"))' if c.positional_choices
                      else 'COMPREPLY=($(compgen -f -- "$cur"))' if c.positional_paths else flags)
        lines = [f"        {label})", *(['            case "$prev" in', *values, "            esac"] if values else []),
                 f'            if [[ "$cur" == -* ]]; then {flags}', f"            else {positional}; fi;;"]
        cases.append("\n".join(lines))
    body = "\n".join(cases)
    return f"""{name}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) cmd="${{COMP_WORDS[i]}}"; break;; esac
    done
    case "$cmd" in
{body}
        *) COMPREPLY=($(compgen -f -- "$cur"));;
    esac
    return 0
}}
"""
