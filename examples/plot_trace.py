#!/usr/bin/env python3
"""Plots moe-route's trace mode: hit rate vs cache size per policy (left), the mean load of
each device per placement (middle) and, given LOADS.csv, the per-layer expert load heat map
(right: each layer's loads over their mean, so 1 = balanced).

usage: plot_trace.py CACHE.csv DEVICES.csv OUT.png [LOADS.csv]   (written by moe-route --trace ... --plot)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(cache_path, devices_path, out_path, loads_path=None):
    with open(cache_path) as f:
        cache = list(csv.DictReader(f))
    with open(devices_path) as f:
        devices = list(csv.DictReader(f))
    loads = []
    if loads_path:
        with open(loads_path) as f:
            loads = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 3 if loads else 2, figsize=(19 if loads else 13, 5))
    left, right = axes[0], axes[1]
    for policy in dict.fromkeys(r["policy"] for r in cache):
        rows = [r for r in cache if r["policy"] == policy]
        left.plot([int(r["m"]) for r in rows], [float(r["hit_rate"]) for r in rows], marker="o", label=policy)
    left.set_xlabel("cache size m (experts per layer)")
    left.set_ylabel("hit rate")
    left.set_title("expert cache hit rate by policy")
    left.set_ylim(0, 1.02)
    if cache:
        left.legend()
    names = list(dict.fromkeys(r["placement"] for r in devices))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        rows = [r for r in devices if r["placement"] == name]
        xs = [int(r["device"]) + (i - len(names) / 2 + 0.5) * width for r in rows]
        right.bar(xs, [float(r["load"]) for r in rows], width=width, label=name)
    right.set_xlabel("device")
    right.set_ylabel("routed slots per layer (mean)")
    right.set_title("device load by placement")
    if names:
        right.legend(fontsize=8)
    if loads:
        layers = 1 + max(int(r["layer"]) for r in loads)
        experts = 1 + max(int(r["expert"]) for r in loads)
        grid = [[0.0] * experts for _ in range(layers)]
        for r in loads:
            grid[int(r["layer"])][int(r["expert"])] = float(r["load"])
        for row in grid:
            mean = sum(row) / len(row)
            row[:] = [v / mean if mean > 0 else 0.0 for v in row]
        im = axes[2].imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        axes[2].set_xlabel("expert")
        axes[2].set_ylabel("layer")
        axes[2].set_title("expert load / layer mean")
        fig.colorbar(im, ax=axes[2])
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:5])
