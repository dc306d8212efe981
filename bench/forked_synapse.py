"""Every homeserver's Synapse forked from the early interpreter (issue 29, hz29), measured against a checkout where only
the first comes from it and the others pay their whole import: one and two homeservers on each, four runs a round
(BASE one, BASE two, this one, this two), rounds repeated, so each figure is paired with the others of its round on
a machine whose load drifts. Not a test: nothing asserted.

    python bench/forked_synapse.py BASE_DIR [--rounds N] [--profile fast] [--jobs 4]

BASE_DIR is a checkout run with its own code (PYTHONPATH cleared: an editable install pointing at it), this
checkout with PYTHONPATH set to it. Per run, as bench/second_homeserver.py measures them: wall time, CPU seconds of
every process (getrusage of children: the forked Synapses are the harness's children, reaped by it, so they are
counted), Synapse's own CPU seconds, and the largest sum of Pss over every process at one instant. Medians per
variant, then each round's ratios of two homeservers to one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from second_homeserver import _run
from suite_bench import REPO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="forked-synapse-"))
    base = args.base.resolve()
    run = f"python -m qa.cli run --profile {args.profile} --progress plain --jobs {args.jobs}"
    sides = {"base": (f"env -u PYTHONPATH {run}", base), "this": (f"env PYTHONPATH={REPO} {run}", REPO)}
    rows: dict[str, list[dict[str, float]]] = {}
    for i in range(args.rounds):
        for side, (command, cwd) in sides.items():
            for count in (1, 2):
                name = f"{side} --homeservers {count}"
                out = tmp / f"{side}-{count}-{i}"
                figures = _run([[*command.split(), "--homeservers", str(count), "--output-dir", str(out)]], cwd=cwd)
                summary = json.loads((out / "matrix-qa-summary.json").read_text())
                figures["passed"] = summary["counts"]["passed"] / summary["counts"]["total"]
                rows.setdefault(name, []).append(figures)
                print(f"round {i + 1} {name}: " + "  ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    for name, runs in rows.items():
        medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{name:26s} " + "  ".join(f"{key} {value:.1f}" for key, value in medians.items()))
    for side in sides:
        one, two = rows[f"{side} --homeservers 1"], rows[f"{side} --homeservers 2"]
        for key in ("wall_s", "cpu_s", "cpu_synapse_s", "peak_pss_mb"):
            ratios = [b[key] / a[key] for a, b in zip(one, two, strict=True) if a[key]]
            deltas = [b[key] - a[key] for a, b in zip(one, two, strict=True)]
            print(f"{side}: two/one {key}: ratios {', '.join(f'{r:.3f}' for r in ratios)}; "
                  f"differences {', '.join(f'{d:+.1f}' for d in deltas)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
