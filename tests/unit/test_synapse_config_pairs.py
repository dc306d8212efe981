"""bench/synapse_config_pairs.py's options: a combination that would measure something other than its label says,
and a malformed --base-env, are refused by the parser (a usage message, exit 2), not run or raised."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("synapse_config_pairs", REPO / "bench" / "synapse_config_pairs.py")
assert _spec is not None and _spec.loader is not None
pairs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pairs)


@pytest.mark.parametrize(("argv", "said"), [
    (["--base-plain-synapse", "--base-env", "MATRIX_QA_SYNAPSE_METRIC_LABELS=1"], "--base-plain-synapse"),
    (["--base-plain-synapse", "--base-db-thread"], "--base-plain-synapse"),
    (["--base-env", "MATRIX_QA_SYNAPSE_METRIC_LABELS"], "expected NAME=VALUE"),
    (["--base-env", "=1"], "expected NAME=VALUE"),
])
def test_what_would_not_be_measured_as_labelled_is_a_usage_error(argv: list[str], said: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        pairs.parse_args(["--variant", "{}", *argv])
    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_well_formed_options_parse() -> None:
    args = pairs.parse_args(["--variant", "{}", "--base-env", "A=1", "--base-env", "B=x=y", "--base-db-thread"])
    assert args.base_env == ["A=1", "B=x=y"] and args.base_db_thread and not args.base_plain_synapse
    assert pairs.parse_args(["--variant", "{}", "--base-plain-synapse"]).base_plain_synapse
