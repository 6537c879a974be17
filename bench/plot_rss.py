#!/usr/bin/env python3
"""Plots the server's RSS from a soak CSV (bench/abuse.sh soak) as an SVG.

usage: bench/plot_rss.py soak.csv soak.svg   (no dependencies)
"""
import csv
import sys

rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["rss_bytes"]]
xs = [float(r["seconds"]) / 60 for r in rows]
ys = [int(r["rss_bytes"]) / 2**20 for r in rows]
W, H, L, B, T, R = 720, 360, 64, 44, 28, 16
x_max = max(xs[-1], 1)
y_max = max(ys) * 1.15
px = lambda x: L + (W - L - R) * x / x_max
py = lambda y: H - B - (H - B - T) * y / y_max
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="18" text-anchor="middle">chat demo RSS during the soak (MiB, sampled every minute)</text>',
    f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
    f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
]
step = 5 if x_max > 10 else 1
for m in range(0, int(x_max) + 1, step):
    out.append(f'<text x="{px(m):.1f}" y="{H - B + 16}" text-anchor="middle">{m}</text>')
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">minutes</text>')
for i in range(6):
    v = y_max * i / 5
    out.append(f'<line x1="{L}" y1="{py(v):.1f}" x2="{W - R}" y2="{py(v):.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{L - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
out.append(f'<polyline fill="none" stroke="#c33" stroke-width="2" points="{points}"/>')
for x, y in zip(xs, ys):
    out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="#c33"/>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
