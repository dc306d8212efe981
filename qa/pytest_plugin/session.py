"""One pytest session's shared matrix-qa run: the homeserver, the model provider and the fork server, started
once on an event loop of their own (a thread), and each test's scenario run on it.

The loop lives in a thread so that whatever runs the test (pytest-asyncio's loop of the test, anyio, or this
plugin itself) the harness's clients and processes stay on the one loop they were made on. The session is a
`qa.run.Run` that never plans its scenarios up front: each test or scenario item hands its scenario over when it
runs, and the session's record (with --matrix-qa-report) is the run's record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from qa.harness.output import Output
from qa.harness.work_dir import work_root
from qa.kernel import event_loop
from qa.provider.record_replay import after_scenario, load_for_replay
from qa.report.summary import ScenarioResult, latency_stats
from qa.run import Run, RunOptions
from qa.run.backends import add_secrets
from qa.run.options import checked_bot_file, preflight
from qa.run.provider import journal_intervals

STOP_WAIT_S = 60.0  # the run's own shutdown is bounded (qa.run.lifecycle); this only guards the thread
CANCEL_WAIT_S = 15.0  # a test cut short (Ctrl-C): its scenario's bounded teardown


class QASession:
    """Started by the first test that needs it; stopped (every process, the work dir) when the session ends."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        # As `matrix-qa run`'s: uvloop unless MATRIX_QA_HARNESS_LOOP=asyncio (qa.kernel.event_loop; a bad value is a
        # ConfigError). Made here, in the main thread, and run in the session's thread: uvloop installs no signal
        # handler off the main thread, and this loop needs none (pytest owns Ctrl-C; `interrupted` records it).
        _, self.loop = event_loop.new_loop(event_loop.HARNESS_ENV, os.environ)
        self.thread = threading.Thread(target=self._serve, name="matrix-qa loop", daemon=True)
        self.run: Run | None = None
        self.base: Any = None  # RunResources every scenario shares
        self.work: Path | None = None
        self._logs: Any = None
        self._log_stream: Any = None
        self.started = False
        self.stopped = False
        self.tests = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # --- calling into the loop -------------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the session's loop and wait for it here (a thread with no loop of its own running). A
        KeyboardInterrupt while waiting cancels it and lets its bounded teardown finish before going on."""
        __tracebackhide__ = True
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                self.loop.call_soon_threadsafe(future.cancel)
                with contextlib.suppress(BaseException):
                    concurrent.futures.wait([future], timeout=CANCEL_WAIT_S)
            raise

    async def on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await `coro` on the session's loop from any asyncio loop (the test's own, or this one)."""
        __tracebackhide__ = True
        if _running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    # --- start and stop ---------------------------------------------------------------------------------------

    def start(self, plan: list[Any]) -> None:
        """Boot the shared components; `plan` is every scenario the session will run (the report's plan, the
        mock's rule files, the replay's cassettes)."""
        if self.started:
            return
        self.started = True
        self.thread.start()
        self.call(self._start(plan))

    async def _start(self, plan: list[Any]) -> None:
        options = self.options
        assert options.output_dir is not None
        options.output_dir.mkdir(parents=True, exist_ok=True)
        # The progress lines go to the run's matrix-qa-output.log (open_record), not to pytest's terminal.
        self._log_stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in _stop
        run = self.run = Run(options, Output(self._log_stream))
        run.live, brought = preflight(options, 1, run.dir, os.environ)
        add_secrets(run.secrets, brought)
        run.bot_file = checked_bot_file(options)
        run.base_plan = run.plan = list(plan)
        run.cassettes = load_for_replay(options, run.plan)
        self._logs = run.open_record()
        self.work = Path(tempfile.mkdtemp(prefix="matrix-qa-", dir=work_root(os.environ)))
        await run.start_components(self.work)
        self.base = run.resources(self.work)

    def stop(self) -> int | None:
        """Every process stopped, the work dir (secrets) gone, the record written; the run's exit code. Safe to
        call twice, and when nothing started."""
        if not self.started or self.stopped or not self.thread.is_alive():
            return None
        self.stopped = True
        try:
            future = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
            return future.result(timeout=STOP_WAIT_S)
        finally:
            from qa.run.lifecycle import kill_everything

            kill_everything()  # last resort, whatever the stop did
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)

    async def _stop(self) -> int | None:
        run = self.run
        code = None
        try:
            if run is not None:
                await run.lifecycle.shutdown(run.homeserver, run.provider, run.fork_server)
        finally:
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)
            if run is not None:
                # Always: the record's last sweep redacts every artifact; --matrix-qa-report only says where.
                from qa.run.record import write_record

                code = write_record(run)
            if run is not None:
                run.out.close()
            if self._logs is not None:
                self._logs.close()
            if self._log_stream is not None:
                self._log_stream.close()
        return code

    def keep_in_plan(self, ids: set[str]) -> None:
        """Only these of the session's planned scenarios are this process's to report (an xdist worker's)."""
        if self.run is not None:
            self.run.plan = [s for s in self.run.plan if s.id in ids]
            self.run.base_plan = [s for s in self.run.base_plan if s.id in ids]

    def interrupted(self, reason: str) -> None:
        """Ctrl-C: the record says so (exit 130, the tests not run named), as a run stopped by a signal does."""
        if self.run is not None and self.run.lifecycle.reason is None:
            self.run.lifecycle.reason, self.run.lifecycle.code = reason, 130

    # --- one scenario ------------------------------------------------------------------------------------------

    def resources_for(self, scenario: Any) -> Any:
        assert self.run is not None
        return self.run.scheduler.resources_for(scenario, self.base, [])

    def say_for(self, scenario_id: str) -> Any:
        assert self.run is not None
        out = self.run.out

        def say(message: str) -> None:
            out.say(f"[{scenario_id}] {message.strip()}")

        return say

    def file_result(self, result: ScenarioResult) -> ScenarioResult:
        """A finished scenario, as the run's scheduler files one: its recording closed, its latency figures,
        the lock evidence of its own trace judged (a failing verdict fails it)."""
        assert self.run is not None
        self.tests += 1
        after_scenario(self.run.provider, result.id, result, self.say_for(result.id))
        result.latency = latency_stats(result.replyLatenciesMs)
        verdict = self.lock_verdict(result.id) if result.status == "pass" else None
        if verdict is not None:
            from qa.report.summary import Failure

            result.status = "fail"
            result.details = f"lock evidence: {verdict[0]}"
            result.failure = Failure(expected="the bot never holds its session write lock across a model request",
                                     seen=verdict)
        self.run.scheduler.results.append(result)
        return result

    def lock_verdict(self, scenario_id: str) -> list[str] | None:
        """The reasons the lock evidence of this scenario fails, as at the end of a run; None when it holds or
        there is none."""
        from qa.kernel.trace import read_trace
        from qa.report.lock_evidence import lock_section

        run = self.run
        assert run is not None
        trace = read_trace(run.dir / "scenarios" / scenario_id / "bot-trace.jsonl")
        probes = [p for p in run.probes if p.get("scenario") == scenario_id]
        section = lock_section({scenario_id: trace}, {scenario_id: journal_intervals(run.provider, run.live,
                                                                                      scenario_id)}, probes)
        if section is None or section.get("verdict") != "fail":
            return None
        return [str(r) for r in section.get("reasons") or []] or ["the lock verdict is fail"]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def default_artifact_dir(config: Any) -> Path:
    """Under pytest's own temporary root (it keeps the last few sessions'), else a temporary directory."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        return Path(factory.mktemp("matrix-qa", numbered=True))
    return Path(tempfile.mkdtemp(prefix="matrix-qa-pytest-"))
