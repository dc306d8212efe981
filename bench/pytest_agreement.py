"""`pytest scenarios/ -m PROFILE` against `matrix-qa run --profile PROFILE`: the same verdict, scenario by scenario.

    python bench/pytest_agreement.py [--profile fast] [--bot tests/bots/nio-reply-bot.yaml]

Runs the built-in scenarios both ways on the same bot (the embedded agent unless --bot), reads both records
(the pytest session's through --matrix-qa-report) and prints each scenario's status and details side by side,
then how many agree. Exit 1 when any scenario's status differs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

from cli_run import REPO, run_matrix_qa


def by_pytest(profile: str, bot: list[str], out: Path) -> dict[str, dict[str, str]]:
    plugin = [] if any(ep.name == "matrix_qa" for ep in entry_points(group="pytest11")) else ["-p", "qa.pytest_plugin"]
    subprocess.run([sys.executable, "-m", "pytest", *plugin, "-o", "addopts=", "-p", "no:cacheprovider", "-q",
                    "-m", profile,
                    *(["--matrix-qa-bot", bot[1]] if bot else []), "--matrix-qa-report", str(out),
                    str(REPO / "scenarios")], cwd=REPO, capture_output=True, text=True, check=False)
    summary = json.loads((out / "matrix-qa-summary.json").read_text())
    return {s["id"]: s for s in summary["scenarios"]}


def normal(text: str) -> str:
    """Markers, event ids and user names differ between two runs; the words must not."""
    text = re.sub(r"MQA-[0-9a-f]{8}", "MQA-x", text or "")
    return re.sub(r"\$[A-Za-z0-9_-]+…?", "$id", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--bot", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep both records here (cli/, pytest/)")
    args = parser.parse_args()
    bot = ["--bot", str(Path(args.bot).resolve())] if args.bot else []
    with tempfile.TemporaryDirectory(prefix="bench-agree-") as raw:
        tmp = args.keep.resolve() if args.keep else Path(raw)
        pytest_said = by_pytest(args.profile, bot, tmp / "pytest")
        summary, _wall = run_matrix_qa(["--profile", args.profile, *bot], tmp / "cli", must_pass=False)
    cli_said = {s["id"]: s for s in summary["scenarios"]}
    agree = same_text = 0
    for sid in sorted(set(cli_said) | set(pytest_said)):
        cli, py = cli_said.get(sid, {}), pytest_said.get(sid, {})
        same = cli.get("status") == py.get("status")
        agree += same
        worded = normal(cli.get("details", "")) == normal(py.get("details", ""))
        same_text += worded
        print(f"{'  ' if same else '≠ '}{'  ' if worded else '~ '}{sid:46} cli {cli.get('status', '-'):5} "
              f"pytest {py.get('status', '-'):5}  {(py.get('details') or '')[:60]}")
    total = len(set(cli_said) | set(pytest_said))
    print(f"agree: {agree}/{total} on the status, {same_text}/{total} on the details' words (~ marks a difference) "
          f"(profile {args.profile}, bot {args.bot or 'the embedded agent'})")
    sys.exit(0 if agree == total else 1)


if __name__ == "__main__":
    main()
