#!/usr/bin/env python3
"""Plots moe-route --compare results: per-expert load per policy (grouped bars) and a panel of
drop rate and straggler ratio (max/mean load) per policy.

usage: plot_policies.py TABLE.csv LOADS.csv OUT.png   (written by moe-route --compare --plot)
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(table_path, loads_path, out_path):
    with open(table_path) as f:
        table = list(csv.DictReader(f))
    loads = {}
    with open(loads_path) as f:
        for row in csv.DictReader(f):
            loads.setdefault(row["policy"], []).append(int(row["load"]))
    policies = [r["policy"] for r in table]
    experts = max(len(v) for v in loads.values())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(10, experts * 0.6), 9), gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(policies)
    colors = plt.get_cmap("tab20").colors
    for i, p in enumerate(policies):
        xs = [e + (i - len(policies) / 2) * width + width / 2 for e in range(len(loads[p]))]
        top.bar(xs, loads[p], width=width, label=p, color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20])
    top.set_xlabel("expert")
    top.set_ylabel("routed slots")
    top.set_title("per-expert load by routing policy")
    top.legend(fontsize=7, ncol=3)
    xs = range(len(policies))
    drop = [100 * float(r["drop_rate"]) for r in table]
    strag = [float(r["max_over_mean"]) for r in table]
    bottom.bar([x - 0.2 for x in xs], drop, width=0.4, color="tab:red", label="drop rate (%)")
    twin = bottom.twinx()
    twin.bar([x + 0.2 for x in xs], strag, width=0.4, color="tab:blue", label="max/mean load")
    bottom.set_xticks(list(xs))
    bottom.set_xticklabels(policies, rotation=30, ha="right", fontsize=8)
    bottom.set_ylabel("drop rate (%)", color="tab:red")
    twin.set_ylabel("straggler ratio (max/mean)", color="tab:blue")
    bottom.set_title("drops and stragglers")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
