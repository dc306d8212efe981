"""The committed cassettes and the CI job that replays them: every scenario of the fast profile has a valid
cassette (so the job skips nothing), and the job runs what the README's loop says."""

from __future__ import annotations

from pathlib import Path

import yaml

from qa.harness.plan import select
from qa.provider.replay import load_cassettes
from qa.scenario.loader import load_scenarios
from qa.shared.markers import TOKEN_RE

REPO = Path(__file__).resolve().parents[2]
CASSETTES = REPO / "fixtures" / "cassettes"


def test_every_fast_scenario_has_a_cassette_that_loads() -> None:
    fast = [s.id for s in select(load_scenarios([REPO / "scenarios"]), "fast", [])]
    loaded = load_cassettes(CASSETTES, fast)
    assert sorted(loaded) == sorted(fast)
    assert all(c.recorded.get("status") == "pass" and c.exchanges for c in loaded.values())


def test_committed_cassettes_hold_no_marker_value_and_no_header() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert not TOKEN_RE.search(text), path.name
        assert "authorization" not in text.lower() and "bearer" not in text.lower(), path.name


def test_ci_replays_the_committed_cassettes_and_always_uploads() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "matrix-qa.yml").read_text())
    job = workflow["jobs"]["fast-replay"]
    run = next(s for s in job["steps"] if "matrix-qa run" in s.get("run", ""))
    args = run["run"].replace("\\\n", " ").split()
    assert args[args.index("--provider") + 1] == "replay" and args[args.index("--profile") + 1] == "fast"
    assert args[args.index("--cassettes") + 1] == "fixtures/cassettes"
    assert "env" not in run or "OPENAI_API_KEY" not in run["env"], "a replay needs no key"
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["path"] == args[args.index("--output-dir") + 1]
    assert job["env"]["MATRIX_QA_ARTIFACT_NAME"] == upload["with"]["name"]
