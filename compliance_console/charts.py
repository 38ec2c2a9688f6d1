"""The ledger's spend-over-time chart as inline SVG: no plotting library in the console,
no script in the page (the console's content policy forbids scripts)."""

from __future__ import annotations

import datetime as dt
from html import escape

__all__ = ["spend_svg"]

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 260, 56, 16, 16, 40
COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"]


def _ticks(top: float, n: int = 5) -> list[float]:
    step = max(top / n, 1e-9)
    magnitude = 10 ** len(str(int(step))) / 10 if step >= 1 else 0.1
    for nice in (1, 2, 2.5, 5, 10):
        if nice * magnitude >= step:
            step = nice * magnitude
            break
    return [round(i * step, 6) for i in range(int(top / step) + 2) if i * step <= top * 1.0001 + step / 2]


def spend_svg(debits: list[dict], budgets: dict[str, float | None]) -> str:
    """Cumulative epsilon spent per dataset against time, with each budget as a dashed line."""
    datasets = sorted({d["dataset"] for d in debits} | {k for k, v in budgets.items() if v is not None})
    if not debits:
        return ('<svg class="chart" viewBox="0 0 720 60" role="img" aria-label="no spending yet">'
                '<text x="12" y="34">No epsilon spent yet.</text></svg>')
    t0, t1 = min(d["at"] for d in debits), max(d["at"] for d in debits)
    t1 = t1 if t1 > t0 else t0 + 1.0
    top = max([sum(d["epsilon"] for d in debits if d["dataset"] == ds) for ds in datasets]
              + [v for v in budgets.values() if v is not None] + [1e-6]) * 1.08

    def x(t: float) -> float:
        return LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT)

    def y(e: float) -> float:
        return TOP + (1 - e / top) * (H - TOP - BOTTOM)

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="epsilon spent over time">',
             f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{W - RIGHT}" y2="{y(0):.1f}" class="axis"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y(0):.1f}" class="axis"/>']
    for tick in _ticks(top / 1.08):
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">{tick:g}</text>'
                     f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{W - RIGHT}" y2="{y(tick):.1f}" class="grid"/>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        parts.append(f'<text x="{x(t):.1f}" y="{H - 22}" class="tick" text-anchor="{anchor}">{stamp}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - 4}" class="label" text-anchor="middle">'
                 'time of each debit</text>')
    legend_y = TOP + 4
    for i, ds in enumerate(datasets):
        colour = COLOURS[i % len(COLOURS)]
        total, points = 0.0, [(x(t0), y(0))]
        for d in (d for d in debits if d["dataset"] == ds):
            points.append((x(d["at"]), y(total)))
            total += d["epsilon"]
            points.append((x(d["at"]), y(total)))
        points.append((x(t1), y(total)))
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        budget = budgets.get(ds)
        if budget is not None:
            parts.append(f'<line x1="{LEFT}" y1="{y(budget):.1f}" x2="{W - RIGHT}" y2="{y(budget):.1f}" '
                         f'stroke="{colour}" stroke-dasharray="6 4"/>')
        label = escape(ds) + f": spent {total:.3f}" + (f" of {budget:g} (dashed)" if budget is not None else "")
        parts.append(f'<rect x="{LEFT + 10}" y="{legend_y + 18 * i}" width="14" height="3" fill="{colour}"/>'
                     f'<text x="{LEFT + 30}" y="{legend_y + 18 * i + 5}" class="legend">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)
