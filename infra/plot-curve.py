#!/usr/bin/env python3
"""Plots docs/bench-curve.csv (written by `cargo bench -p soci-indexer --bench curve`) as an SVG.

Two panels over compressed image size: `soci-indexer create` wall time (one core and both cores) and
peak RSS, with the 6 GB compressed-image ceiling the incumbent Lambda (cfn-ecr-aws-soci-index-builder)
documents marked. Standard library only: the SVG is written by hand.

Usage: plot-curve.py CSV SVG
"""

import csv
import sys
from html import escape

WIDTH, HEIGHT = 900, 640
LEFT, RIGHT = 80, 30
PANELS = [(60, 330), (400, 590)]  # (top, bottom) of the time panel and of the RSS panel
CEILING_GB = 6.0
RSS_LIMIT_MIB = 128
COLORS = {1: "#d95f02", 2: "#1b9e77"}
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def nice_step(span, ticks=6):
    """A round tick step that splits `span` into about `ticks` intervals."""
    raw = span / ticks
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def axis_max(value):
    step = nice_step(value)
    return step * (int(value / step) + 1), step


def main(source, target):
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    series = {}
    for row in rows:
        cores = int(row["cores"])
        series.setdefault(cores, []).append(
            (float(row["image_gb"]), float(row["wall_s"]), float(row["mb_per_s"]), float(row["peak_rss_mib"]))
        )
    for points in series.values():
        points.sort()
    x_max, x_step = axis_max(max(p[0] for pts in series.values() for p in pts))
    t_max, t_step = axis_max(1.2 * max(p[1] for pts in series.values() for p in pts))
    r_max, r_step = axis_max(max(RSS_LIMIT_MIB, max(p[3] for pts in series.values() for p in pts)))

    def x(gb):
        return LEFT + (WIDTH - LEFT - RIGHT) * gb / x_max

    def y(value, panel, top_value):
        top, bottom = PANELS[panel]
        return bottom - (bottom - top) * value / top_value

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" {FONT} font-size="13">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
        "soci-indexer create: time and peak memory against image size (local registry, --no-ztoc-cache)</text>",
        f'<text x="{WIDTH / 2}" y="42" text-anchor="middle" font-size="12" fill="#555">'
        "generated gzip -1 layers (250 MB, then 1 GB each), default settings, one run; labels: compressed MB/s</text>",
    ]
    for panel, (label, top_value, step, unit) in enumerate(
        [("wall time (s)", t_max, t_step, "s"), ("peak RSS (MiB)", r_max, r_step, "MiB")]
    ):
        top, bottom = PANELS[panel]
        value = 0.0
        while value <= top_value + 1e-9:
            yy = y(value, panel, top_value)
            out.append(f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{LEFT - 8}" y="{yy + 4:.1f}" text-anchor="end">{value:g}</text>')
            value += step
        gb = 0.0
        while gb <= x_max + 1e-9:
            xx = x(gb)
            out.append(f'<line x1="{xx:.1f}" y1="{bottom}" x2="{xx:.1f}" y2="{bottom + 5}" stroke="#333"/>')
            out.append(f'<text x="{xx:.1f}" y="{bottom + 19}" text-anchor="middle">{gb:g}</text>')
            gb += x_step
        out.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#333"/>')
        out.append(f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>')
        mid = (top + bottom) / 2
        out.append(
            f'<text x="20" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 20 {mid:.1f})">{label}</text>'
        )
        out.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{bottom + 36}" text-anchor="middle">'
            "compressed image size (GB)</text>"
        )
        # The incumbent's ceiling.
        cx = x(CEILING_GB)
        out.append(
            f'<line x1="{cx:.1f}" y1="{top}" x2="{cx:.1f}" y2="{bottom}" stroke="#b2182b" '
            'stroke-width="2" stroke-dasharray="6 4"/>'
        )
        if panel == 0:
            out.append(
                f'<text x="{cx + 6:.1f}" y="{top + 14}" fill="#b2182b">incumbent Lambda\'s documented</text>'
            )
            out.append(f'<text x="{cx + 6:.1f}" y="{top + 30}" fill="#b2182b">ceiling: 6 GB compressed</text>')
        else:
            ly = y(RSS_LIMIT_MIB, panel, top_value)
            out.append(
                f'<line x1="{LEFT}" y1="{ly:.1f}" x2="{WIDTH - RIGHT}" y2="{ly:.1f}" stroke="#7570b3" '
                'stroke-dasharray="3 3"/>'
            )
            out.append(f'<text x="{LEFT + 6}" y="{ly - 6:.1f}" fill="#7570b3">{RSS_LIMIT_MIB} MiB target</text>')
        for cores, points in sorted(series.items()):
            index = 1 if panel == 0 else 3
            path = " ".join(f"{x(p[0]):.1f},{y(p[index], panel, top_value):.1f}" for p in points)
            color = COLORS.get(cores, "#666")
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
            labelled_at = -1e9
            for p in points:
                px, py = x(p[0]), y(p[index], panel, top_value)
                out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}"/>')
                # Rates on the time panel, where points are far enough apart to read them.
                if panel == 0 and px - labelled_at >= 60:
                    labelled_at = px
                    anchor_y = py - 9 if cores == 1 else py + 18
                    anchor = "start" if px < LEFT + 30 else "middle"
                    out.append(
                        f'<text x="{px:.1f}" y="{anchor_y:.1f}" text-anchor="{anchor}" font-size="11" '
                        f'fill="{color}">{p[2]:.0f} MB/s</text>'
                    )
    # Legend.
    lx, ly = LEFT + 16, PANELS[0][0] + 14
    for n, (cores, _) in enumerate(sorted(series.items())):
        color = COLORS.get(cores, "#666")
        label = "1 core (taskset -c 0, like a 1-vCPU Lambda)" if cores == 1 else f"{cores} cores (shared with the registry)"
        yy = ly + 20 * n
        out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 24}" y2="{yy}" stroke="{color}" stroke-width="2.5"/>')
        out.append(f'<text x="{lx + 30}" y="{yy + 4}">{escape(label)}</text>')
    out.append("</svg>")
    with open(target, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
