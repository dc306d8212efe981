"""The run summary: the record every other report is rendered from.

`schema` is versioned so readers (CI, dashboards, `matrix-qa report --merge`) can refuse what they don't know.
Field names are camelCase because the JSON is what people read and script against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from qa.report.verdict import RunStatus

SCHEMA = "matrix-qa.summary/v1"

# interrupted: the scenario was running when a signal (or a dying homeserver) ended the run.
Status = Literal["pass", "fail", "skip", "interrupted"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HomeserverInfo(_Model):
    kind: str
    version: str | None = None
    serverName: str | None = None
    baseUrl: str | None = None
    log: str | None = None
    image: str | None = None  # the container image, for homeservers run in Docker
    imageId: str | None = None  # the engine's id of that image (sha256:...): which build of a tag ran
    registration: str | None = None  # how the run's test users were registered


class ProviderInfo(_Model):
    mode: Literal["mock", "live", "replay"]
    model: str
    baseUrlHost: str | None = None


class BotInfo(_Model):
    """The bot under test, as its bot file describes it."""

    name: str
    source: str
    ready: str
    capabilities: list[str] = Field(default_factory=list)
    # How its processes were started: "fork-server" (forked from one pre-imported process, see
    # qa.harness.fork_server) or "exec" (a fresh interpreter or program each time).
    started: Literal["fork-server", "exec"] = "exec"
    # What each capability a bot may claim means (qa.harness.capabilities' MEANING), so a reader of a skip
    # ("lacks 'lock'") learns what the bot would have to do. Empty in summaries written before it was recorded.
    capabilityMeanings: dict[str, str] = Field(default_factory=dict)


class Environment(_Model):
    homeserver: HomeserverInfo
    provider: ProviderInfo
    bot: BotInfo | None = None  # None in summaries written before bot files existed
    # The run's --peer-bot (qa.harness.peer), the second bot of the scenarios that name one; None: no peer.
    peerBot: BotInfo | None = None
    profile: str
    python: str
    platform: str
    matrixQaVersion: str
    # The harness's event loop ("uvloop" or "asyncio", qa.kernel.event_loop); None in summaries written before it
    # was recorded. The bot's own loop is in its trace's `start` record.
    eventLoop: str | None = None
    # The config file the run read (qa.config_file) and the settings it gave, keyed as written there.
    configFile: str | None = None
    configSettings: dict[str, Any] = Field(default_factory=dict)


class Counts(_Model):
    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0
    flaky: int = 0  # scenarios of a --repeat run that passed some but not all attempts


class StepResult(_Model):
    index: int
    kind: str
    status: Status
    durationMs: float = 0.0
    detail: str = ""
    # Which evidence the step's check rested on: trace | relation | journal | order | order-guess |
    # quiet-window | not-checked (qa.evidence); None for steps that only act.
    method: str | None = None
    # Which of the bot's accounts sent the message the step checked ("bot": its main one; a bot file's
    # `accounts`); None when the step checked no bot message or the bot has only its main account.
    account: str | None = None


class Failure(_Model):
    step: int | None = None
    stepKind: str | None = None
    expected: str
    seen: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)
    # A replayed request against the nearest recorded one, unified diff (qa.report.replay_failure).
    diff: list[str] = Field(default_factory=list)


class NegativeCheck(_Model):
    """Silence proved by evidence: the trigger was seen and dropped, and a later control was answered."""

    step: int
    triggerEventId: str
    expectedReason: str
    botReason: str | None = None
    controlEventId: str | None = None
    controlReplyEventId: str | None = None
    unwantedReplies: list[str] = Field(default_factory=list)
    # trace: the bot traced the drop; order: an in-order bot answered the later control and nothing for the
    # trigger came before that answer; quiet-window: nothing in a fixed window (the last resort).
    method: Literal["trace", "order", "quiet-window"] = "trace"
    notes: list[str] = Field(default_factory=list)


class Latency(_Model):
    """Reply latency: driver send → reply observed, minus the mock model's own simulated latency, i.e. what the
    harness, the homeserver and the bot add. Nearest-rank percentiles, so each is an observed value."""

    p50Ms: float
    p95Ms: float
    count: int


class InfraRetry(_Model):
    """A try that ended in an infrastructure error (never the scenario's failure) and was run again once."""

    ranAs: str  # the id that try ran under: its artifacts are in scenarios/<ranAs>/
    error: str
    durationMs: float = 0.0


class Attempt(_Model):
    """One of the --repeat N runs of a scenario, each with its own users, rooms, bot and markers."""

    attempt: int  # 1-based
    status: Status
    durationMs: float = 0.0
    details: str = ""
    ranAs: str  # the id it ran under: its artifacts are in scenarios/<ranAs>/
    retried: bool = False  # an infrastructure error made it run a second time (see that attempt's retries)


class PassRate(_Model):
    """How often a repeated scenario passed. `passRate` is over the attempts that finished (passed or failed);
    flaky: some, but not all, of them passed."""

    repeat: int  # attempts planned
    finished: int
    passed: int
    passRate: float | None  # None when no attempt finished
    minPassRate: float
    flaky: bool
    attempts: list[Attempt] = Field(default_factory=list)


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
    # Where the first boot's time went, harness side (bench/boot_pairs.py reads it beside the `ready` record's
    # `boot` phases): `t` when the harness began starting the bot (mono ms, the trace's clock), then ms after it:
    # the pid known (`spawnedMs`), the `ready` record read from the trace (`readyReadMs`), readiness seen (`seenMs`).
    botBootMarks: dict[str, float] | None = None
    # The look after the bot's exit (qa.scenario.fence): its fences sent and received and the final checks run
    # again, in ms; None when the scenario had no final checks or ended before them.
    fenceMs: float | None = None
    replyLatenciesMs: list[float] = Field(default_factory=list)
    latency: Latency | None = None  # over replyLatenciesMs; absent when the scenario expected no reply
    negativeChecks: list[NegativeCheck] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)
    retries: list[InfraRetry] = Field(default_factory=list)
    passRate: PassRate | None = None  # only with --repeat N > 1
    # Faults served on purpose (fault proxy rules, mock-provider faults), in the order they hit.
    faultHits: list[dict[str, Any]] = Field(default_factory=list)
    # Which of the run's homeservers it ran on (1-based, as Summary.homeservers counts them); None: it never
    # started (skipped), or a summary written before --homeservers.
    homeserver: int | None = None


class Timings(_Model):
    homeserverBootMs: float | None = None
    providerBootMs: float | None = None
    # After the homeserver was ready, how long the run still waited for the fork server's imports (0: it was ready
    # first; None: no fork server, or the homeserver never got ready).
    forkServerWaitMs: float | None = None
    botBootMs: float | None = None  # median over scenarios
    scenariosMs: float | None = None
    reportMs: float | None = None
    totalMs: float | None = None
    note: str | None = None  # how to read these numbers when they are not one run's (a merged summary)


class HomeserverRun(_Model):
    """One of the run's homeservers (--homeservers): where it answered, its log, its boot, what it served."""

    index: int  # 1-based: ScenarioResult.homeserver
    baseUrl: str | None = None
    log: str | None = None
    bootMs: float | None = None  # spawn to ready (the first's is Timings.homeserverBootMs)
    scenarios: int = 0  # how many of the run's scenarios ran on it
    # Why it never got ready: its boot failed (under `auto` the run went on without it, qa.run.homeservers).
    notBooted: str | None = None


class RunError(_Model):
    """An infrastructure or config problem that stopped (part of) the run."""

    component: str
    message: str
    log: str | None = None


class Deadline(_Model):
    """The run's --timeout: whether it passed, and what had and had not finished by then."""

    timeout: str  # as given, e.g. "10m"
    timeoutMs: float
    reached: bool = False
    finished: list[str] = Field(default_factory=list)
    unfinished: list[str] = Field(default_factory=list)


class ShardInfo(_Model):
    index: int  # 1-based
    count: int


class MergedRun(_Model):
    """One summary that went into a merged summary."""

    runId: str
    shard: ShardInfo | None = None
    status: RunStatus
    exitCode: int
    totalMs: float | None = None
    scenarios: int
    source: str | None = None  # the summary file it was read from


class Summary(_Model):
    schema_: str = Field(SCHEMA, alias="schema")
    runId: str
    status: RunStatus
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
    # Optional, so every earlier v1 summary still reads: added with --jobs, --shard and `report --merge`.
    latency: Latency | None = None  # over every scenario's replies
    jobs: int | None = None  # how many scenarios ran side by side at most
    shard: ShardInfo | None = None
    mergedFrom: list[MergedRun] | None = None
    # Added with --repeat, --min-pass-rate and --timeout.
    repeat: int | None = None
    minPassRate: float | None = None
    deadline: Deadline | None = None
    # Added with --homeservers: every homeserver the run booted, in order (None in earlier summaries and for a
    # summary merged from shards).
    homeservers: list[HomeserverRun] | None = None
    # What --homeservers asked for: "auto" (the default: qa.harness.jobs.homeserver_count chose the count) or N;
    # None in earlier summaries and merged ones. The report says why a run had several.
    homeserversAsked: Literal["auto"] | PositiveInt | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def count(results: list[ScenarioResult]) -> Counts:
    return Counts(
        total=len(results),
        passed=sum(r.status == "pass" for r in results),
        failed=sum(r.status == "fail" for r in results),
        skipped=sum(r.status == "skip" for r in results),
        interrupted=sum(r.status == "interrupted" for r in results),
        flaky=sum(r.passRate is not None and r.passRate.flaky for r in results),
    )


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile: always one of the observed values, which is what a reader expects to see."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_stats(values: Iterable[float]) -> Latency | None:
    values = list(values)
    if not values:
        return None
    return Latency(p50Ms=percentile(values, 50), p95Ms=percentile(values, 95), count=len(values))
