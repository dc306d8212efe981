"""A lock Timeline (qa.report.lock_timeline) as a standalone SVG document: our own few lines of SVG, no library.

Pure: Timeline in, text out. Rows are grouped by session; each row is one turn's `lock` or `I/O` lane; the part
of a hold that overlaps its turn's I/O is drawn over the hold in red. Every bar carries a <title> (the tooltip
a browser shows) with its exact start and end, so the picture can be read to the millisecond when it matters.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from qa.report.lock_timeline import IO_LABELS, WAIT_NOTED_MS, Bar, Timeline
from qa.report.text import human_ms

WIDTH = 1000
LABEL_W = 300
ROW_H = 18
TOP = 64
PAD = 12
# Room right of the plot for half of the last tick's label ("1.5 s" is centred on the plot's right edge).
RIGHT_W = 28
# The narrowest bar drawn: a 0.3 ms hold beside a 1.5 s model call is a fraction of a pixel.
MIN_BAR_W = 3.0
COLOURS = {"hold": "#4c78a8", "overlap": "#d62728", "wait": "#8c8c8c", "model": "#f2a541", "approval": "#9d755d",
           "preview": "#72b7b2", "media": "#b279a2"}
OTHER_IO = "#bab0ac"
LEGEND = (("wait", "waited for the lock"), ("hold", "lock held"), ("overlap", "lock held during I/O"),
          *IO_LABELS.items())


def nice_step(span_ms: float, ticks: int = 8) -> float:
    """A 1/2/5×10ⁿ ms step giving about `ticks` gridlines over the span."""
    raw = max(span_ms, 1.0) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _tick_label(ms: float, step: float) -> str:
    if step >= 1000:
        return f"{ms / 1000:g} s"
    return f"{ms:g} ms"


def _bar_title(bar: Bar) -> str:
    what = {"hold": "lock held", "overlap": "LOCK HELD DURING I/O", "wait": "waited for the lock"}.get(
        bar.kind, IO_LABELS.get(bar.kind, bar.kind))
    return f"{what}: {bar.start:.1f} → {bar.end:.1f} ms ({human_ms(bar.end - bar.start)})"


def bar_box(start: float, end: float, left: float, right: float) -> tuple[float, float]:
    """(x, width) of a bar from its ends in pixels: at least MIN_BAR_W wide, grown leftwards at the plot's
    right edge so it stays inside the picture."""
    width = max(MIN_BAR_W, end - start)
    x = min(start, right - width)
    return max(left, x), width


def verdict_text(tl: Timeline) -> str:
    text = f"lock held during I/O for {human_ms(tl.overlap_ms)}" if tl.failed else "no lock held during I/O"
    if tl.waited_ms >= WAIT_NOTED_MS:
        text += f"; longest wait for the lock {human_ms(tl.waited_ms)}"
    return text


def render_svg(tl: Timeline) -> str:
    plot_w = WIDTH - LABEL_W - RIGHT_W
    span = max(tl.span_ms, 1.0)

    def x(ms: float) -> float:
        return LABEL_W + ms / span * plot_w

    # A session's name gets a row of its own above its lanes: beside them it would collide with long turn names.
    rows = len(tl.lanes) + len({lane.session for lane in tl.lanes})
    rows_h = ROW_H * max(1, rows)
    height = TOP + rows_h + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>']
    verdict = verdict_text(tl)
    out.append(f'<text x="{PAD}" y="18" font-size="14" font-weight="bold">{escape(tl.scenario)}</text>')
    out.append(f'<text x="{PAD}" y="34" fill="{COLOURS["overlap"] if tl.failed else "#2e7d32"}">'
               f'{escape(verdict)}; {tl.turns} turn(s) drawn'
               + (f", {tl.omitted_turns} more not drawn" if tl.omitted_turns else "") + "</text>")
    legend_x = float(PAD)  # seven entries: from the left edge they fit the width
    for kind, label in LEGEND:
        out.append(f'<rect x="{legend_x:.0f}" y="{TOP - 26}" width="10" height="10" fill="{COLOURS[kind]}"/>')
        out.append(f'<text x="{legend_x + 13:.0f}" y="{TOP - 17}">{escape(label)}</text>')
        legend_x += 14 + 6.5 * len(label) + 12
    step = nice_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        out.append(f'<line x1="{x(tick):.1f}" y1="{TOP - 4}" x2="{x(tick):.1f}" y2="{TOP + rows_h}" '
                   'stroke="#dddddd"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{TOP + rows_h + 14}" text-anchor="middle" fill="#555555">'
                   f'{_tick_label(tick, step)}</text>')
        tick += step
    session = None
    row = 0
    for lane in tl.lanes:
        if lane.session != session:
            session = lane.session
            y = TOP + row * ROW_H
            out.append(f'<line x1="{PAD}" y1="{y}" x2="{WIDTH - PAD}" y2="{y}" stroke="#999999"/>')
            out.append(f'<text x="{PAD}" y="{y + 13}" font-weight="bold">session {escape(session)}</text>')
            row += 1
        y = TOP + row * ROW_H
        row += 1
        name = escape(f"{lane.number}. {lane.turn} {lane.what}")  # numbered as the per-turn table is
        out.append(f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end">{name}</text>')
        # Overlap last, so the red is drawn over the hold it is part of.
        for bar in sorted(lane.bars, key=lambda b: b.kind == "overlap"):
            left, width = bar_box(x(bar.start), x(bar.end), LABEL_W, LABEL_W + plot_w)
            colour = COLOURS.get(bar.kind, OTHER_IO)
            out.append(f'<rect class="{escape(bar.kind)}" x="{left:.1f}" y="{y + 3}" width="{width:.1f}" '
                       f'height="{ROW_H - 6}" fill="{colour}"><title>{escape(_bar_title(bar))}</title></rect>')
    if not tl.lanes:
        out.append(f'<text x="{LABEL_W}" y="{TOP + 13}" fill="#555555">no holds or I/O in the trace</text>')
    out.append(f'<text x="{WIDTH - PAD}" y="{height - 8}" text-anchor="end" fill="#555555">'
               "ms since the scenario's first traced hold or I/O</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
