"""Draws benches/compare.sh's medians as one self-contained SVG: req/s (linear) and p99 (log)
by connection count, one line per contender. Standard library only.

Usage: chart.py RESULTS.tsv TITLE > chart.svg, where each line of RESULTS.tsv is
key, label, connections, req/s, p99 in µs (tab-separated).
"""

import math
import sys
from collections import OrderedDict
from xml.sax.saxutils import escape

# Fixed colours per contender, so two charts read alike; others cycle through the rest.
COLOURS = {
    "nginx": "#7f7f7f",
    "nginx_lua": "#bcbd22",
    "floor": "#000000",
    "sidecar_pass": "#1f77b4",
    "sidecar_fixed": "#d62728",
}
SPARE = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#ff7f0e"]
DASHED = {"floor"}  # the floor is the reference line

PANEL_W, PANEL_H, MARGIN_L, MARGIN_T, MARGIN_B, GAP = 360, 240, 64, 58, 44, 40


def read(path):
    series = OrderedDict()
    for line in open(path, encoding="utf-8"):
        key, label, conns, rps, p99 = line.rstrip("\n").split("\t")
        entry = series.setdefault(key, {"label": label, "points": []})
        entry["points"].append((int(conns), float(rps), float(p99)))
    return series


def nice_ceiling(value):
    if value <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * step:
            return factor * step
    return 10 * step


def panel(x0, title, conns, series, pick, log_scale, unit):
    """One chart: x is the connection counts, evenly spaced; y linear from 0 or log10."""
    out = []
    values = [pick(p) for s in series.values() for p in s["points"] if pick(p) > 0]
    if log_scale:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        to_y = lambda v: MARGIN_T + PANEL_H * (1 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
        ticks = [lo * 10**i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        hi = nice_ceiling(max(values))
        to_y = lambda v: MARGIN_T + PANEL_H * (1 - v / hi)
        ticks = [hi * i / 5 for i in range(6)]
    step = PANEL_W / max(len(conns) - 1, 1)
    to_x = {c: x0 + (i * step if len(conns) > 1 else PANEL_W / 2) for i, c in enumerate(conns)}
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T - 16}" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
    out.append(f'<rect x="{x0}" y="{MARGIN_T}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#ccc"/>')
    for t in ticks:
        y = to_y(t)
        out.append(f'<line x1="{x0}" x2="{x0 + PANEL_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t, unit)}</text>')
    for c, x in to_x.items():
        out.append(f'<text x="{x:.1f}" y="{MARGIN_T + PANEL_H + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{x0 + PANEL_W / 2}" y="{MARGIN_T + PANEL_H + 36}" text-anchor="middle">client connections</text>')
    for key, s in series.items():
        pts = sorted((to_x[p[0]], to_y(pick(p))) for p in s["points"])
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if key in DASHED else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s["colour"]}" stroke-width="2"{dash}/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s["colour"]}"/>')
    return out


def fmt(value, unit):
    if unit == "rps":
        return f"{value / 1000:g}k"
    if value >= 1000:
        return f"{value / 1000:g} ms"
    return f"{value:g} µs"


def main():
    series = read(sys.argv[1])
    title = sys.argv[2] if len(sys.argv) > 2 else "compare.sh"
    spare = iter(SPARE * 4)
    for key, s in series.items():
        s["colour"] = COLOURS.get(key) or next(spare)
    conns = sorted({p[0] for s in series.values() for p in s["points"]})
    width = MARGIN_L * 2 + PANEL_W * 2 + GAP + 16
    legend_top = MARGIN_T + PANEL_H + MARGIN_B + 16
    height = legend_top + 18 * len(series) + 8
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN_L}" y="18" font-size="13">{escape(title)}</text>',
    ]
    body += panel(MARGIN_L, "req/s (higher is better)", conns, series, lambda p: p[1], False, "rps")
    body += panel(2 * MARGIN_L + PANEL_W + GAP, "p99 latency, log scale (lower is better)", conns, series,
                  lambda p: p[2], True, "us")
    for i, (key, s) in enumerate(series.items()):
        y = legend_top + 18 * i
        dash = ' stroke-dasharray="6 4"' if key in DASHED else ""
        body.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + 28}" y1="{y}" y2="{y}" stroke="{s["colour"]}" stroke-width="2"{dash}/>')
        body.append(f'<text x="{MARGIN_L + 36}" y="{y + 4}">{escape(s["label"])}</text>')
    body.append("</svg>")
    print("\n".join(body))


if __name__ == "__main__":
    main()
