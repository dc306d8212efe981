"""The run summary: the record every other report is rendered from.

`schema` is versioned so readers (CI, dashboards, `matrix-qa report --merge`) can refuse what they don't know.
Field names are camelCase because the JSON is what people read and script against.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "matrix-qa.summary/v1"

Status = Literal["pass", "fail", "skip"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HomeserverInfo(_Model):
    kind: str
    version: str | None = None
    serverName: str | None = None
    baseUrl: str | None = None
    log: str | None = None
    image: str | None = None  # the container image, for homeservers run in Docker


class ProviderInfo(_Model):
    mode: Literal["mock", "live"]
    model: str
    baseUrlHost: str | None = None


class Environment(_Model):
    homeserver: HomeserverInfo
    provider: ProviderInfo
    profile: str
    python: str
    platform: str
    matrixQaVersion: str


class Counts(_Model):
    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0


class StepResult(_Model):
    index: int
    kind: str
    status: Status
    durationMs: float = 0.0
    detail: str = ""


class Failure(_Model):
    step: int | None = None
    stepKind: str | None = None
    expected: str
    seen: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)


class NegativeCheck(_Model):
    """Silence proved by evidence: the trigger was seen and dropped, and a later control was answered."""

    step: int
    triggerEventId: str
    expectedReason: str
    botReason: str | None = None
    controlEventId: str | None = None
    controlReplyEventId: str | None = None
    unwantedReplies: list[str] = Field(default_factory=list)
    method: Literal["trace", "quiet-window"] = "trace"


class ScenarioResult(_Model):
    id: str
    title: str
    status: Status
    durationMs: float = 0.0
    details: str = ""
    source: str | None = None
    failure: Failure | None = None
    steps: list[StepResult] = Field(default_factory=list)
    botBootMs: float | None = None
    replyLatenciesMs: list[float] = Field(default_factory=list)
    negativeChecks: list[NegativeCheck] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)


class Timings(_Model):
    homeserverBootMs: float | None = None
    providerBootMs: float | None = None
    botBootMs: float | None = None  # median over scenarios
    scenariosMs: float | None = None
    reportMs: float | None = None
    totalMs: float | None = None


class RunError(_Model):
    """An infrastructure or config problem that stopped (part of) the run."""

    component: str
    message: str
    log: str | None = None


class Summary(_Model):
    schema_: str = Field(SCHEMA, alias="schema")
    runId: str
    status: Literal["pass", "fail", "error"]
    exitCode: int
    startedAt: str
    finishedAt: str
    command: list[str] = Field(default_factory=list)
    environment: Environment
    counts: Counts
    timings: Timings
    scenarios: list[ScenarioResult]
    lock: dict[str, Any] | None = None
    errors: list[RunError] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def count(results: list[ScenarioResult]) -> Counts:
    return Counts(
        total=len(results),
        passed=sum(r.status == "pass" for r in results),
        failed=sum(r.status == "fail" for r in results),
        skipped=sum(r.status == "skip" for r in results),
    )
