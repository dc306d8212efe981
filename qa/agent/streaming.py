"""Streaming previews: a draft reply that appears early and is edited as the model speaks.

Modes (agent setting `streaming`):
  off      one message once the answer is complete (no preview);
  partial  a draft m.text as soon as text (or, with toolProgress on, a tool call) arrives, edited with
           `m.replace` + `m.new_content` at most once per `streamEditIntervalMs`, then one final edit;
  quiet    an m.notice placeholder at the start of the turn, then one final edit to the m.text answer.

Rules kept here, each a bug a scenario catches:
  - the final edit carries the complete answer (tool-progress lines are preview only);
  - a reader that ignores edits sees a sensible body: the draft's text so far, then `* <answer>` on the edit;
  - previews never ping: every draft and edit carries an empty `m.mentions`, whatever the text says;
  - editing a draft is I/O: nothing here takes the session write lock. Each send is traced as
    `preview.edit.start` / `preview.edit.end`, which the lock evidence counts as I/O like a model request;
  - the preview finalizes after a tool error too.

The pure parts (pacing, contents, text composition) are apart from the `Preview` that does the sending.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from qa.kernel.clock import mono_ms
from qa.kernel.trace import Trace

Mode = Literal["off", "partial", "quiet"]
# (content) -> sent event id or None; the caller's send adds nothing to the content.
SendContent = Callable[[dict[str, Any]], Awaitable[str | None]]
# Called once before the first draft and once when the model is done: the hooks the lock mutation uses.
Hook = Callable[[], Awaitable[None]]

DRAFT_SUFFIX = " …"
QUIET_PLACEHOLDER = "Working on it…"
TOOL_MARK = "🔧"
NO_ANSWER = "(no answer: this turn failed)"
_USER_ID = re.compile(r"@[A-Za-z0-9._=/+-]+:[A-Za-z0-9.-]+(?::\d+)?")


class EditPacer:
    """At most one edit per interval; the first text is always shown at once. Pure: the caller gives the time."""

    def __init__(self, interval_ms: float) -> None:
        self.interval_ms = interval_ms
        self._last: float | None = None

    def due(self, now_ms: float) -> bool:
        return self._last is None or now_ms - self._last >= self.interval_ms

    def mark(self, now_ms: float) -> None:
        self._last = now_ms


def compose(answer: str, progress: list[str], *, final: bool) -> str:
    """The preview's text: tool-progress lines, then the answer so far. The final text is the answer alone."""
    if final:
        return answer
    lines = [*progress, answer] if answer else list(progress)
    return "\n".join(lines) + DRAFT_SUFFIX if lines else QUIET_PLACEHOLDER


def tool_line(name: str, arguments: dict[str, Any], state: Literal["running", "done", "failed"]) -> str:
    command = str(arguments.get("command", "")).strip()
    what = f"{name}: {command}" if command else name
    return f"{TOOL_MARK} {what} ({state})"


def tool_failed(result: str) -> bool:
    """Whether a tool result reports that the tool did not do its job (refused, denied, not run, errored)."""
    lowered = result.lower()
    return lowered.startswith(("not run", "could not", "tool error", "unknown tool")) or "it was not run" in lowered


def leaky_mentions(text: str) -> dict[str, Any]:
    """What a careless bot would put in m.mentions for this text: the bug `preview-pings` reproduces."""
    mentions: dict[str, Any] = {}
    if "@room" in text:
        mentions["room"] = True
    ids = sorted(set(_USER_ID.findall(text)))
    if ids:
        mentions["user_ids"] = ids
    return mentions


def draft_content(text: str, msgtype: str, relates_to: dict[str, Any] | None, pings: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": msgtype, "body": text, "m.mentions": leaky_mentions(text) if pings else {}}
    if relates_to:
        content["m.relates_to"] = relates_to
    return content


def edit_content(target: str, text: str, pings: bool = False) -> dict[str, Any]:
    """An edit (m.replace) whose new content is an m.text with `text`; the fallback body starts with `* `."""
    mentions = leaky_mentions(text) if pings else {}
    return {
        "msgtype": "m.text",
        "body": f"* {text}",
        "m.mentions": mentions,
        "m.new_content": {"msgtype": "m.text", "body": text, "m.mentions": mentions},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


class Preview:
    """One turn's preview. Call `start`, then `on_text` per model delta (the text so far) and the tool hooks,
    then `finish(answer)`, which returns the event id that is the reply (the draft), or None if sending failed."""

    _ids = itertools.count(1)

    def __init__(
        self, mode: Mode, send: SendContent, trace: Trace, *, session: str, attempt: str,
        relates_to: dict[str, Any] | None, interval_ms: float, tool_progress: bool,
        pings: bool = False, truncate_final: bool = False, before_draft: Hook | None = None,
        after_stream: Hook | None = None, buffered: bool = False,
    ) -> None:
        self.mode = mode
        self._send = send
        self._trace = trace
        self._session = session
        self._attempt = attempt
        self._relates_to = relates_to
        self._pacer = EditPacer(interval_ms)
        self._tool_progress = tool_progress
        self._pings = pings
        self._truncate_final = truncate_final
        self._before_draft = before_draft
        self._after_stream = after_stream
        self._buffered = buffered  # the test-only `buffered-preview`: nothing shown until the answer is whole
        self._progress: list[str] = []
        self._answer = ""  # text of the current model round
        self._earlier = ""  # text of earlier rounds (a model may speak before calling a tool)
        self.draft_id: str | None = None
        self._shown: str | None = None
        self.edits = 0

    async def start(self) -> None:
        if self.mode == "quiet" and not self._buffered:
            await self._draft(QUIET_PLACEHOLDER, "m.notice")

    async def on_text(self, text: str) -> None:
        self._answer = text
        if self.mode == "partial" and not self._buffered:
            await self._show(final=False)

    def next_round(self) -> None:
        if self._answer:
            self._earlier = (self._earlier + "\n" + self._answer).strip()
        self._answer = ""

    async def tool_started(self, name: str, arguments: dict[str, Any]) -> None:
        if not self._tool_progress or self.mode == "off":
            return
        self._progress.append(tool_line(name, arguments, "running"))
        await self._show(final=False, force=True)

    async def tool_finished(self, name: str, arguments: dict[str, Any], result: str) -> bool:
        """Show the tool's outcome; returns whether the tool failed."""
        failed = tool_failed(result)
        if self._tool_progress and self.mode != "off" and self._progress:
            self._progress[-1] = tool_line(name, arguments, "failed" if failed else "done")
            await self._show(final=False, force=True)
        return failed

    async def finish(self, answer: str) -> str | None:
        final = answer[: max(1, len(answer) * 2 // 3)] if self._truncate_final else answer
        if self._buffered and self.draft_id is None and self.mode == "partial":
            # The cheat: a draft and a preview edit in one burst after the fact, counted like a real preview.
            await self._draft(final[: max(1, len(final) // 3)], "m.text")
            await self._edit(final[: max(1, len(final) * 2 // 3)], final=False)
        if self._buffered and self.draft_id is None and self.mode == "quiet":
            await self._draft(QUIET_PLACEHOLDER, "m.notice")  # the placeholder only once the answer is whole
        if self.draft_id is None:
            # Nothing was previewed (a quick answer in partial mode): the answer is the draft, and final.
            return await self._draft(final, "m.text")
        await self._edit(final, final=True)
        return self.draft_id

    async def end_stream(self) -> None:
        """The model is done; called before the reply is written to the transcript."""
        self._before_draft = None
        if self._after_stream is not None:
            hook, self._after_stream = self._after_stream, None
            await hook()

    async def give_up(self) -> None:
        """The turn ended without an answer: a draft already shown must not stay a draft forever."""
        if self.draft_id is not None and self.mode != "off":
            await self._io("failed", self.draft_id, edit_content(self.draft_id, NO_ANSWER))
            self.draft_id = None

    def abandon(self) -> None:
        """Give the preview up: the draft stays as it was and `finish` posts a fresh message. Only the
        `preview-abandoned-on-tool-error` mutation calls this: it is the bug of a preview stuck on a tool error."""
        self.draft_id = None
        self.mode = "off"

    async def _show(self, *, final: bool, force: bool = False) -> None:
        if self.mode == "off":
            return
        answer = "\n".join(t for t in (self._earlier, self._answer) if t)
        text = compose(answer, self._progress, final=final)
        if self.draft_id is None:
            if self.mode == "partial" and (answer or self._progress):
                await self._draft(text, "m.text")
            return
        if self.mode == "quiet" or text == self._shown:
            return  # quiet mode edits once, at the end
        if force or self._pacer.due(mono_ms()):
            await self._edit(text, final=False)

    async def _draft(self, text: str, msgtype: str) -> str | None:
        if self._before_draft is not None:
            hook, self._before_draft = self._before_draft, None
            await hook()
        event_id = await self._io("draft", None, draft_content(text, msgtype, self._relates_to, self._pings))
        self.draft_id = event_id
        self._shown = text
        self._pacer.mark(mono_ms())
        return event_id

    async def _edit(self, text: str, *, final: bool) -> None:
        assert self.draft_id is not None
        await self._io("final" if final else "edit", self.draft_id, edit_content(self.draft_id, text, self._pings))
        self.edits += 1
        self._shown = text
        self._pacer.mark(mono_ms())

    async def _io(self, kind: str, target: str | None, content: dict[str, Any]) -> str | None:
        request_id = f"{self._attempt}-preview-{next(self._ids)}"
        self._trace.emit("preview.edit.start", session=self._session, attempt=self._attempt, requestId=request_id,
                         kind=kind, target=target)
        event_id = await self._send(content)
        self._trace.emit("preview.edit.end", session=self._session, attempt=self._attempt, requestId=request_id,
                         kind=kind, eventId=event_id, ok=event_id is not None)
        return event_id
