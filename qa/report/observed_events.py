"""The run's observed events (matrix-qa-observed-events.json), kept between a scenario's end and the record.

Why (issue 29, the harness's memory): the events of every scenario that ended were kept whole as nio delivered them
(bodies, `unsigned`, nested dicts) until the run's end, ~2 KiB of live objects per event: some 4 MiB by the end of
`--profile all` (1,800 events), held through the run's busiest moments. The file only ever showed them sanitized
(qa.report.writer.sanitize_event), so each scenario's events are sanitized as it ends and kept as one JSON text:
what the file will say, a few hundred bytes an event, in one block of memory. Secrets are still redacted when the
file is written (a secret learnt later is redacted in earlier scenarios' events too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from qa.report.writer import sanitize_event


class ObservedEvents:
    def __init__(self, include_bodies: bool = False) -> None:
        self.include_bodies = include_bodies
        self._texts: list[tuple[str, str]] = []  # (scenario id, its sanitized events as one JSON array)
        self.count = 0

    def add(self, scenario_id: str, observed_by: str, events: Iterable[dict[str, Any]]) -> None:
        """One scenario's events, as its witness saw them; the caller's events are left as they were."""
        kept = [sanitize_event({**e, "scenario": scenario_id, "observedBy": observed_by},
                               include_bodies=self.include_bodies) for e in events]
        if kept:
            self._texts.append((scenario_id, json.dumps(kept, ensure_ascii=False)))
            self.count += len(kept)

    def __len__(self) -> int:
        return self.count

    def events(self, order: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
        """Every event, sanitized, scenario by scenario in `order` (scenario id → position; unknown ids last, in the
        order they ended), each scenario's in the order seen."""
        texts = self._texts if order is None else sorted(self._texts, key=lambda t: order.get(t[0], len(order)))
        return [event for _, text in texts for event in json.loads(text)]
