#!/usr/bin/env python3
"""Routing and capacity policies side by side on the same NumPy logits: the policy table and a
plot (per-expert load per policy; drop rate and straggler ratio per policy).

    python3 examples/python/compare_policies.py [--logits FILE.npy] [--tokens 8192 --experts 16
        --skew zipf:1.2] [--preset mixtral] [--plot policies.png]

Without --logits, seeded synthetic logits with a Zipf popularity skew stand in for a model's.
"""
import argparse

import numpy as np

import moe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logits", help="router logits [tokens, experts] (.npy, float32)")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--skew", default="zipf:1.2")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--preset", default="mixtral", choices=moe.preset_names)
    ap.add_argument("--plot", help="write the figure here (PNG)")
    a = ap.parse_args()

    if a.logits:
        logits = np.load(a.logits).astype(np.float32)
    else:
        logits = moe.synthetic_logits(a.tokens, a.experts, skew=a.skew, seed=a.seed)
    rows = moe.compare_policies(logits, preset=a.preset)
    table = moe.policy_table(rows)

    cols = ["drop_rate", "rerouted", "max_over_mean", "cv", "padding_fraction", "aux_loss", "experts_per_token",
            "us_per_token"]
    print(f"{logits.shape[0]} tokens, {logits.shape[1]} experts, router {a.preset} (moe variant {moe.variant})")
    print(f"{'policy':<28}" + "".join(f"{c:>18}" for c in cols))
    for r in table:
        print(f"{r['policy']:<28}" + "".join(f"{r[c]:>18.4f}" for c in cols))

    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 9), gridspec_kw={"height_ratios": [3, 2]})
        width = 0.8 / len(rows)
        for i, r in enumerate(rows):
            xs = np.arange(len(r["load"])) + (i - len(rows) / 2 + 0.5) * width
            top.bar(xs, r["load"], width=width, label=r["policy"])
        top.set_xlabel("expert")
        top.set_ylabel("routed slots")
        top.set_title("per-expert load by policy")
        top.legend(fontsize=7, ncol=3)
        xs = np.arange(len(rows))
        bottom.bar(xs - 0.2, 100 * table["drop_rate"], width=0.4, color="tab:red", label="drop rate (%)")
        twin = bottom.twinx()
        twin.bar(xs + 0.2, table["max_over_mean"], width=0.4, color="tab:blue", label="max/mean load")
        bottom.set_xticks(xs)
        bottom.set_xticklabels(table["policy"], rotation=30, ha="right", fontsize=7)
        bottom.set_ylabel("drop rate (%)")
        twin.set_ylabel("max / mean load")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"wrote {a.plot}")


if __name__ == "__main__":
    main()
