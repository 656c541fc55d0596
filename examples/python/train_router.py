#!/usr/bin/env python3
"""A tiny MoE router trained with torch on synthetic data, balanced by moe's losses.

The task: tokens come from 8 clusters, and the "right" expert of a token is its cluster, but
half the clusters are 4x more frequent, so a router trained on the task alone overloads their
experts. moe.torch.load_balancing_loss (Megatron's normalisation) and moe.torch.z_loss (whose
backward passes are moe's analytic gradients) are added to the task loss; each step prints the
load balance (max / mean expert load) moe.measure reports for the router's top-2 routing.

    python3 examples/python/train_router.py [--steps 60] [--aux 0.05] [--z 1e-3]
"""
import argparse

import torch

import moe
import moe.torch as mt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--aux", type=float, default=0.5, help="load-balancing loss coefficient")
    ap.add_argument("--z", type=float, default=1e-3, help="z-loss coefficient")
    ap.add_argument("--lr", type=float, default=0.1)
    a = ap.parse_args()

    torch.manual_seed(0)
    E, H = a.experts, a.hidden
    centers = torch.randn(E, H) * 2
    popularity = torch.tensor([4.0] * (E // 2) + [1.0] * (E - E // 2))
    # Two routers from the same start on the same batches: the task alone, and task + moe's losses.
    plain = torch.nn.Linear(H, E, bias=False)
    balanced = torch.nn.Linear(H, E, bias=False)
    balanced.load_state_dict(plain.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=a.lr) for m in (plain, balanced)]
    print("max/mean expert load and drop rate at capacity factor 1.0 of each router's top-2 routing")
    print(f"{'step':>4} | {'task only':^22} | {'task + aux + z-loss':^40}")
    print(f"{'':>4} | {'max/mean':>10} {'drop':>10} | {'max/mean':>10} {'drop':>10} {'aux':>8} {'z':>8}")
    for step in range(a.steps):
        cluster = torch.multinomial(popularity, a.tokens, replacement=True)
        x = centers[cluster] + torch.randn(a.tokens, H)
        stats = []
        for model, opt, extra in ((plain, opts[0], False), (balanced, opts[1], True)):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, cluster)
            if extra:
                aux = mt.load_balancing_loss(logits, top_k=2, normalization="megatron")
                z = mt.z_loss(logits)
                loss = loss + a.aux * aux + a.z * z
            opt.zero_grad()
            loss.backward()
            opt.step()
            r = moe.route(logits.detach(), "mixtral")
            balance = moe.measure(r)["max_over_mean"]
            report = moe.apply_capacity(r, factor=1.0)
            stats.append((balance, moe.measure(r, report)["drop_rate"]))
        if step % max(1, a.steps // 15) == 0 or step == a.steps - 1:
            (b0, d0), (b1, d1) = stats
            print(f"{step:>4} | {b0:>10.3f} {d0:>10.3f} | {b1:>10.3f} {d1:>10.3f} {aux.item():>8.4f} {z.item():>8.3f}")


if __name__ == "__main__":
    main()
