"""The fault proxy's memory of to-device events a `hold_to_device` rule kept back from the bot's /sync answers,
until new rules release them into the next answer, and of the room keys the test users shared (the ciphertexts
that tell an Olm-encrypted room key from any other Olm message). Pure: the proxy hands it each parsed answer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from qa.harness.fault_rules import ROOM_KEY, FaultRule, give_to_device, take_to_device
from qa.kernel.clock import mono_ms


class ToDeviceHold:
    def __init__(self) -> None:
        self.held: list[Any] = []
        self.held_by: FaultRule | None = None  # the rule that kept them: its requests take them back
        self.room_keys: set[str] = set()  # Olm ciphertext bodies of the room keys the test users shared

    def note_room_keys(self, bodies: Iterable[str]) -> None:
        self.room_keys.update(bodies)

    def gives_back(self, method: str, path: str) -> bool:
        """Whether this request's answer is where the kept events go (some are kept, and it is a /sync)."""
        return bool(self.held) and self.held_by is not None and self.held_by.matches(method, path)

    def releasing(self, new_rules: Sequence[FaultRule]) -> list[FaultRule]:
        """The rule whose open requests to cut when `new_rules` are installed: the one that kept events back,
        when it is not among the new rules (the events then go back in the next answer, not a long-poll later)."""
        if self.held and self.held_by is not None and self.held_by not in new_rules:
            return [self.held_by]
        return []

    def answer(self, answer: Any, rule: FaultRule | None, installed: Sequence[FaultRule], record: dict[str, Any],
               hits: list[dict[str, Any]]) -> Any:
        """The answer to give: events kept back while `rule` is still installed (it may have been replaced while
        the long-poll was open), else the kept ones given back. Each keeping and giving back is a hit."""
        if rule is not None and rule.hold_to_device is not None and rule in installed:
            answer, taken = take_to_device(answer, rule.hold_to_device, self.room_keys)
            if taken:
                self.held += taken
                self.held_by = rule
                what = f"{len(taken)} room key(s) the test users shared" if rule.hold_to_device == ROOM_KEY \
                    else f"{len(taken)} to-device {rule.hold_to_device} event(s)"
                hits.append(_hit(rule, "hold-to-device", record, hits, len(taken), f"kept back {what}"))
            return answer
        if self.held and self.held_by is not None:
            events, self.held = self.held, []
            hits.append(_hit(self.held_by, "release-to-device", record, hits, len(events),
                             f"gave back {len(events)} kept to-device event(s)"))
            return give_to_device(answer, events)
        return answer


def _hit(rule: FaultRule, action: str, record: dict[str, Any], hits: list[dict[str, Any]], events: int, what: str
         ) -> dict[str, Any]:
    occurrence = 1 + sum(1 for h in hits if h["rule"] == rule.name and h["action"] == action)
    return {"rule": rule.name, "occurrence": occurrence, "action": action, "method": record["method"],
            "path": record["path"], "status": record["status"], "startedAt": round(record["startedAt"], 1),
            "endedAt": round(mono_ms(), 1), "what": what, "events": events}
