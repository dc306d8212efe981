#!/usr/bin/env python3
"""Attack bot: the nio test bot with one realistic misbehaviour, chosen by $EVIL_MODE (repro for the attack report).

Modes:
  edit-stream      sends "…" (replying to the trigger), then edits it to the model's answer (streaming bots do this)
  edit-garbage     sends the right answer, then edits it to "WRONG ANSWER" (what users end up seeing)
  double           answers every trigger twice (both with m.in_reply_to)
  no-relation      answers with a plain message (no m.in_reply_to)
  debounce         answers unmentioned messages too, but 4 s later and concurrently (a "batch chatter" bot)
  print-env        prints its whole environment at start (a debug-happy bot), then behaves
  notice           answers with m.notice
  trace-ready-only writes one trace record, `ready` (readiness {trace: true}), and answers correctly
  crash-with-helper starts a helper process that inherits stdout, then exits 1 on the first message
  concurrent-plain answers every text message, mentioned or not, each as soon as its own model answer comes
                   (so out of order), with a plain message (no m.in_reply_to), and writes no trace
  serial-plain     answers every text message, mentioned or not, one after the other, with a plain message
  trace-edit-late  writes a trace; sends the right answer, then ends its turn while its edit to "WRONG ANSWER"
                   is still on its way (traced as a preview edit: start, then end with the edit's event id)
(debounce waits $EVIL_DELAY seconds, default 4.)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bots"))
import nio_reply_bot as nb

MODE = os.environ.get("EVIL_MODE", "")
_ANSWERING: set[asyncio.Future[None]] = set()


class EvilBot(nb.ReplyBot):
    async def handle(self, room_id: str, event: dict[str, Any]) -> None:
        if MODE == "debounce" and not nb.should_answer(event, self.s.user_id, require_mention=True) and \
                nb.should_answer(event, self.s.user_id, require_mention=False):
            delay = float(os.environ.get("EVIL_DELAY", "4"))
            asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self._answer(room_id, event)))
            return
        if MODE == "concurrent-plain":
            if nb.should_answer(event, self.s.user_id, require_mention=False):
                task = asyncio.ensure_future(self._answer(room_id, event))
                _ANSWERING.add(task)  # kept until done: the loop holds only a weak reference
                task.add_done_callback(_ANSWERING.discard)
            return
        if not nb.should_answer(event, self.s.user_id, require_mention=MODE != "serial-plain"):
            return
        await self._answer(room_id, event)

    async def _answer(self, room_id: str, event: dict[str, Any]) -> None:
        if MODE == "crash-with-helper":
            print("crashing now (a helper process keeps running)", flush=True)
            os._exit(1)
        content = event["content"]
        trigger = str(event.get("event_id"))
        root = nb.thread_root(content)
        body = str(content.get("body", ""))
        session = nb.Session(nb.session_file(self.s.state_dir, room_id, root), room_id, root)
        if MODE == "edit-stream":
            first = await self.client.room_send(room_id, "m.room.message", nb.reply_content("…", trigger, root))
        reply = await self.ask_model(session.messages, body) or nb.FAILURE_TEXT
        if MODE == "edit-stream":
            await self.client.room_send(room_id, "m.room.message", {
                "msgtype": "m.text", "body": "* " + reply, "m.new_content": {"msgtype": "m.text", "body": reply},
                "m.relates_to": {"rel_type": "m.replace", "event_id": first.event_id}})
        elif MODE == "trace-edit-late":
            await self._answer_then_edit_late(room_id, trigger, root, reply)
        elif MODE == "edit-garbage":
            first = await self.client.room_send(room_id, "m.room.message", nb.reply_content(reply, trigger, root))
            await self.client.room_send(room_id, "m.room.message", {
                "msgtype": "m.text", "body": "* WRONG ANSWER",
                "m.new_content": {"msgtype": "m.text", "body": "WRONG ANSWER"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": first.event_id}})
        elif MODE in ("no-relation", "concurrent-plain", "serial-plain"):
            await self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": reply})
        elif MODE == "notice":
            await self.client.room_send(room_id, "m.room.message",
                                        nb.reply_content(reply, trigger, root, msgtype="m.notice"))
        else:
            n = 2 if MODE == "double" else 1
            for _ in range(n):
                await self.client.room_send(room_id, "m.room.message", nb.reply_content(reply, trigger, root))
        session.record(trigger, body, reply)

    async def _answer_then_edit_late(self, room_id: str, trigger: str, root: str | None, reply: str) -> None:
        """The turn ends as soon as the edit is sent off: a bot that finishes its answers in the background."""
        attempt = f"{trigger}-1"
        _trace("turn.start", session=room_id, attempt=attempt, eventId=trigger)
        first = await self.client.room_send(room_id, "m.room.message", nb.reply_content(reply, trigger, root))
        _trace("reply.sent", session=room_id, attempt=attempt, eventId=first.event_id, inReplyTo=trigger)
        request = f"{attempt}-edit"
        _trace("preview.edit.start", session=room_id, attempt=attempt, requestId=request, kind="edit",
               target=first.event_id)

        async def edit() -> None:
            sent = await self.client.room_send(room_id, "m.room.message", {
                "msgtype": "m.text", "body": "* WRONG ANSWER",
                "m.new_content": {"msgtype": "m.text", "body": "WRONG ANSWER"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": first.event_id}})
            event_id = getattr(sent, "event_id", None)
            _trace("preview.edit.end", session=room_id, attempt=attempt, requestId=request, kind="edit",
                   eventId=event_id, ok=event_id is not None)

        task = asyncio.ensure_future(edit())
        _ANSWERING.add(task)
        task.add_done_callback(_ANSWERING.discard)
        _trace("turn.end", session=room_id, attempt=attempt, eventId=trigger, outcome="replied")


nb.ReplyBot = EvilBot  # type: ignore[misc]


def _trace(record_type: str, **fields: Any) -> None:
    import json
    import time
    with open(os.environ["MATRIX_QA_TRACE_FILE"], "a") as fh:
        fh.write(json.dumps({"type": record_type, "t": time.monotonic_ns() / 1e6, **fields}) + "\n")


def _print(*args: Any, **kwargs: Any) -> None:
    """trace-ready-only: the only trace record this bot writes is `ready` (docs: every record is optional)."""
    print(*args, **kwargs)
    if MODE in ("trace-ready-only", "trace-edit-late") and args and str(args[0]).startswith("syncing as"):
        _trace("ready")


nb.print = _print  # type: ignore[attr-defined]

if __name__ == "__main__":
    if MODE == "crash-with-helper":
        import subprocess
        subprocess.Popen(["sleep", "600"])  # a helper (tool runner, MCP server...) that inherits stdout
    if MODE == "print-env":
        for k, v in sorted(os.environ.items()):
            print(f"{k}={v}", flush=True)
    sys.exit(nb.main())
