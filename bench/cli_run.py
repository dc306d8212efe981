"""Running `matrix-qa run` from a benchmark as a user would: a new process, its summary read back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_matrix_qa(args: list[str], out: Path, *, must_pass: bool = True) -> tuple[dict[str, Any], float]:
    """The run's summary and its wall time in seconds. Exits with the run's stderr when it wrote no summary,
    or (with must_pass) when it did not pass; a benchmark of a deliberately failing run passes False."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qa.cli", "run", *args, "--output-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    summary_path = out / "matrix-qa-summary.json"
    if not summary_path.exists() or (must_pass and proc.returncode != 0):
        sys.exit(f"matrix-qa run {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(summary_path.read_text()), wall
