"""The bot's transcripts as a scenario leaves them: copied into the artifacts redacted (bodies cut to lengths
when E2EE protected them), and checked line by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from qa.shared.redact import redact

if TYPE_CHECKING:
    from qa.report.summary import ScenarioResult


def strip_transcript_bodies(text: str) -> str:
    """Pure: each transcript line with its `content` replaced by its length (lines that do not parse, too)."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(json.dumps({"unparsed": True, "length": len(line)}))
            continue
        if isinstance(record, dict) and "content" in record:
            record["content"] = {"length": len(json.dumps(record["content"], ensure_ascii=False))}
        out.append(json.dumps(record, ensure_ascii=False) if isinstance(record, dict)
                   else json.dumps({"length": len(line)}))
    return "\n".join(out) + ("\n" if out else "")


def invalid_transcript_lines(sessions_dir: Path) -> list[str]:
    problems = []
    for path in sorted(sessions_dir.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                json.loads(line)
            except ValueError as exc:
                problems.append(f"{path.name}:{number}: {exc}: {line[:80]!r}")
    return problems


def collect_artifacts(state_dir: Path, scenario_dir: Path, result: ScenarioResult, secrets: list[str],
                      strip_bodies: bool = False) -> None:
    """Transcripts, by the convention $MATRIX_QA_STATE_DIR/sessions/*.jsonl, copied redacted: a model that
    echoes a key back puts it in the transcript. In an encrypted scenario they hold what E2EE protected, so
    their contents are cut to lengths unless the run has --include-bodies."""
    sessions = state_dir / "bot" / "sessions"
    transcripts = sorted(sessions.glob("*.jsonl")) if sessions.is_dir() else []
    if transcripts:
        target = scenario_dir / "transcripts"
        target.mkdir(parents=True, exist_ok=True)
        for path in transcripts:
            text = path.read_text(encoding="utf-8", errors="replace")
            if strip_bodies:
                text = strip_transcript_bodies(text)
            (target / path.name).write_text(redact(text, secrets), encoding="utf-8")
        result.artifacts["transcripts"] = str(target.relative_to(scenario_dir.parent.parent))
    for name in ("bot-trace.jsonl", "bot.log", "peer-bot.log", "peer-bot-trace.jsonl"):
        if (scenario_dir / name).exists():
            result.artifacts[name.split(".")[0]] = str((scenario_dir / name).relative_to(scenario_dir.parent.parent))
