"""Writing a run's reports to its artifact directory, and reading a summary back.

The summary JSON is written first and every other file is rendered from that same (redacted) record, so the
files on disk always agree with each other and `matrix-qa report` can re-render any of them later.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qa.kernel.errors import ConfigError
from qa.report.html import render_html
from qa.report.junit import render_junit
from qa.report.markdown import render_markdown
from qa.report.summary import SCHEMA, Summary
from qa.shared.redact import redact, redact_data

SUMMARY_FILE = "matrix-qa-summary.json"
REPORT_FILE = "matrix-qa-report.md"
HTML_FILE = "matrix-qa-report.html"
JUNIT_FILE = "junit.xml"
EVENTS_FILE = "matrix-qa-observed-events.json"

# Content keys that describe an event's shape without carrying what someone wrote. A whitelist, because
# other keys (approval metadata, tool output, edits) can carry text just like `body` does.
_STRUCTURAL_CONTENT_KEYS = ("msgtype", "format", "m.relates_to", "m.mentions", "algorithm", "membership")


def _atomic_write(path: Path, text: str) -> None:
    # Write beside the target and rename over it: a reader (or a Ctrl-C) sees the old file or the new one,
    # never half a summary that `load_summary` would then reject.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; artifacts are meant to be read by whoever collects them.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _structural_content(content: dict[str, Any]) -> dict[str, Any]:
    kept = {key: copy.deepcopy(content[key]) for key in _STRUCTURAL_CONTENT_KEYS if key in content}
    if isinstance(content.get("m.new_content"), dict):
        kept["m.new_content"] = _structural_content(content["m.new_content"])
    if isinstance(content.get("body"), str):
        kept["bodyLength"] = len(content["body"])
    return kept


def sanitize_event(event: dict[str, Any], *, include_bodies: bool = False) -> dict[str, Any]:
    """A copy of one observed event fit for an artifact; the caller's event is left as it was."""
    out = copy.deepcopy(event)
    content = event.get("content")
    if isinstance(content, dict):
        if include_bodies:
            if isinstance(content.get("body"), str):
                out["content"]["bodyLength"] = len(content["body"])
            if isinstance(content.get("file"), dict):
                # An encrypted attachment's key opens the file for anyone holding the artifact: never kept.
                out["content"]["file"] = {k: v for k, v in content["file"].items() if k not in ("key", "iv", "hashes")}
        else:
            out["content"] = _structural_content(content)
            # `unsigned` can bundle other events whole (an edit's new content, the redaction's reason).
            out.pop("unsigned", None)
    # Whether the bot coped with E2EE matters when reading a failure, even once bodies are gone.
    if event.get("type") == "m.room.encrypted" or "decrypted" in event:
        out["encrypted"] = True
    return out


def sanitize_events(events: Iterable[dict[str, Any]], *, include_bodies: bool = False) -> list[dict[str, Any]]:
    return [sanitize_event(e, include_bodies=include_bodies) for e in events]


def write_reports(
    summary: Summary,
    out_dir: Path,
    *,
    observed_events: list[dict[str, Any]] | None = None,
    include_bodies: bool = False,
    secrets: Iterable[str] = (),
    sanitized: bool = False,
) -> dict[str, str]:
    """Write the summary, markdown and HTML reports, JUnit XML and (when given) observed events under `out_dir`.

    `sanitized`: the observed events are sanitized already (qa.report.observed_events), so only redacted here.
    Returns artifact name → path relative to `out_dir`. Those names are also added to the written summary's
    `artifacts`, so the record lists its sibling files; the caller's summary object is not modified.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    secrets = list(secrets)
    written = {"summary": SUMMARY_FILE, "report": REPORT_FILE, "html": HTML_FILE, "junit": JUNIT_FILE}
    if observed_events is not None:
        written["observedEvents"] = EVENTS_FILE

    data = redact_data(summary.to_json_dict(), secrets)
    data["artifacts"] = {**data.get("artifacts", {}), **written}
    record = Summary.model_validate(data)

    # The record goes first: if we are interrupted after it, the rest can be re-rendered from it.
    _atomic_write(out_dir / SUMMARY_FILE, _json(record.to_json_dict()))
    # Redacting the rendered text again catches a secret that only exists once rendered (split across fields).
    _atomic_write(out_dir / REPORT_FILE, redact(render_markdown(record), secrets))
    _atomic_write(out_dir / HTML_FILE, redact(render_html(record), secrets))
    _atomic_write(out_dir / JUNIT_FILE, redact(render_junit(record), secrets))
    if observed_events is not None:
        events = redact_data(observed_events if sanitized else sanitize_events(observed_events,
                                                                                include_bodies=include_bodies), secrets)
        _atomic_write(out_dir / EVENTS_FILE, _json(events))
    return written


MAX_SUMMARY_BYTES = 256 * 2**20  # a summary of thousands of scenarios is a few MB


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is past the range of a float")
    return value


def load_summary(path: Path) -> Summary:
    """Read a `matrix-qa-summary.json`, refusing (with the file named) anything that is not a v1 summary."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes; a run summary is at most {MAX_SUMMARY_BYTES}")
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_json, parse_float=_finite)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read run summary: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason}); expected a run summary") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep to be a run summary") from None
    except ValueError as e:  # an integer of thousands of digits; NaN, Infinity or a float past the float range
        raise ConfigError(f"{path}: not a run summary: {str(e).split(';')[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object; expected a matrix-qa run summary")
    schema = data.get("schema")
    if schema is None:
        raise ConfigError(f'{path}: no "schema" field; expected a matrix-qa run summary ({SCHEMA})')
    if schema != SCHEMA:
        raise ConfigError(f"{path}: summary schema {schema!r} is not supported; this matrix-qa reads {SCHEMA!r}")
    try:
        return Summary.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}" for err in e.errors()[:8])
        raise ConfigError(f"{path}: not a valid {SCHEMA} summary: {problems}") from None
