#!/usr/bin/env python3
"""Golden capacity (token-drop) cases for moe, from torch transcriptions of each peer:
  * Megatron-Core moe_utils.apply_router_token_dropping (drop_policy "probs" and "position")
  * DeepSpeed sharded_moe top1gating / top2gating (capacity, cumsum locations, renormalise the
    kept weights by their sum clamped at float eps; no noise, no RTS)
  * Tutel fast_dispatch gating (normalised top-k gates, slot-major locations, batch-prioritised
    routing)
As in gen_router_golden.py, every top-k / sort is stable (ties -> lower index).

Writes tests/data/capacity/<case>.{logits,indices,weights}.npy and cases.txt.
Run with Debian's python3-torch and python3-numpy:  python3 tests/gen_capacity_golden.py
"""
import math
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "capacity")
EPS = torch.finfo(torch.float32).eps


def topk(x, k, dim=-1):
    vals, idx = torch.sort(x, dim=dim, descending=True, stable=True)
    return vals.narrow(dim, 0, k), idx.narrow(dim, 0, k)


def megatron_drop(logits, k, cf, policy):
    """Megatron: softmax router (pre-softmax, no renorm), then apply_router_token_dropping."""
    t, e = logits.shape
    scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
    probs, idx = topk(scores, k)
    routing_probs = torch.zeros_like(scores).scatter(1, idx, probs)
    routing_map = torch.zeros_like(scores).int().scatter(1, idx, 1).bool()
    capacity = math.ceil((t * k / e) * cf)
    if capacity > t:
        keep_mask = torch.ones_like(routing_map)
    else:
        if policy == "probs":
            source = routing_probs
        else:  # "position": among routed tokens (1s), the first in token order
            source = routing_map.int()
        _, cap_idx = topk(source, capacity, dim=0)
        keep_mask = torch.zeros_like(routing_map).scatter(0, cap_idx, True)
    final_map = routing_map & keep_mask
    kept = final_map.gather(1, idx)
    return torch.where(kept, idx, -1), torch.where(kept, probs, torch.zeros_like(probs)), capacity


def deepspeed_gating(logits, k, cf, min_capacity):
    """DeepSpeed top1gating (k = 1) / top2gating (k = 2), drop_tokens=True, no noise / RTS."""
    t, e = logits.shape
    gates = torch.softmax(logits, dim=1)
    cap_factor = torch.tensor(cf * k)
    capacity = int(torch.ceil((t / e) * cap_factor).to(torch.int64))
    capacity = max(capacity, min_capacity)
    idx1 = topk(gates, 1)[1][:, 0]
    mask1 = torch.nn.functional.one_hot(idx1, num_classes=e)
    loc1 = torch.cumsum(mask1, dim=0) - 1
    if k == 1:
        mask1 = mask1 * torch.lt(loc1, capacity)
        kept1 = mask1.sum(dim=1).bool()
        g1 = (gates * mask1).sum(dim=1)
        return torch.where(kept1, idx1, -1)[:, None], g1[:, None], capacity
    logits_except1 = logits.masked_fill(mask1.bool(), float("-inf"))
    idx2 = topk(logits_except1, 1)[1][:, 0]
    mask2 = torch.nn.functional.one_hot(idx2, num_classes=e)
    loc2 = torch.cumsum(mask2, dim=0) - 1 + torch.sum(mask1, dim=0, keepdim=True)
    mask1 = mask1 * torch.lt(loc1, capacity)
    mask2 = mask2 * torch.lt(loc2, capacity)
    g1 = (gates * mask1).sum(dim=1)
    g2 = (gates * mask2).sum(dim=1)
    denom = torch.clamp(g1 + g2, min=EPS)
    g1, g2 = g1 / denom, g2 / denom
    kept1, kept2 = mask1.sum(dim=1).bool(), mask2.sum(dim=1).bool()
    idx = torch.stack([torch.where(kept1, idx1, -1), torch.where(kept2, idx2, -1)], dim=1)
    return idx, torch.stack([g1, g2], dim=1), capacity


def tutel_gating(logits, k, cf, bpr):
    """Tutel: softmax, top-k, gates normalised (sum clamped at eps), slot-major locations
    (every token's first choice before any second), optionally in batch-prioritised order."""
    t, e = logits.shape
    scores = torch.softmax(logits, dim=1)
    gates_s, idx = topk(scores, k)
    gates_s = gates_s / torch.clamp(gates_s.sum(dim=1, keepdim=True), min=EPS)
    order = torch.arange(t)
    if bpr:
        order = torch.sort(-scores.max(dim=1)[0], stable=True)[1]
    masks = [torch.nn.functional.one_hot(idx[order, s], num_classes=e) for s in range(k)]
    capacity = k * int(cf * ((t + e - 1) // e))
    keep = torch.zeros(t, k, dtype=torch.bool)
    base = torch.zeros(1, e, dtype=torch.int64)
    for s in range(k):
        loc = torch.cumsum(masks[s], dim=0) - 1 + base
        base = base + masks[s].sum(dim=0, keepdim=True)
        loc_s = (loc * masks[s]).sum(dim=1)
        keep[order, s] = loc_s < capacity
    return torch.where(keep, idx, -1), torch.where(keep, gates_s, torch.zeros_like(gates_s)), capacity


CASES = []


def case(name, e, k, t, router, drop, ref):
    CASES.append((name, e, k, t, router, drop, ref))


# router spec (parsed by tests/test_capacity_golden.cpp): preset,args ; drop spec: key=value
for cf in (0.5, 1.0, 1.25):
    case(f"megatron_probs_cf{cf}", 8, 2, 48, "megatron_pre,2", f"formula=megatron factor={cf} policy=weight renorm=none",
         lambda l, cf=cf: megatron_drop(l, 2, cf, "probs"))
    case(f"megatron_position_cf{cf}", 8, 2, 48, "megatron_pre,2", f"formula=megatron factor={cf} policy=position renorm=none",
         lambda l, cf=cf: megatron_drop(l, 2, cf, "position"))
    case(f"deepspeed_top2_cf{cf}", 8, 2, 48, "softmax_raw,2", f"formula=deepspeed factor={cf} policy=slot_major renorm=clamp",
         lambda l, cf=cf: deepspeed_gating(l, 2, cf, 0))
    case(f"tutel_top2_cf{cf}", 8, 2, 48, "tutel,2", f"formula=tutel factor={cf} policy=slot_major renorm=none",
         lambda l, cf=cf: tutel_gating(l, 2, cf, False))
    case(f"tutel_bpr_top2_cf{cf}", 8, 2, 48, "tutel,2", f"formula=tutel factor={cf} policy=batch_prioritized renorm=none",
         lambda l, cf=cf: tutel_gating(l, 2, cf, True))
case("deepspeed_top1_min4", 16, 1, 40, "softmax_raw,1", "formula=deepspeed factor=0.5 min=4 policy=slot_major renorm=none",
     lambda l: deepspeed_gating(l, 1, 0.5, 4))
case("megatron_probs_top4_e16", 16, 4, 64, "megatron_pre,4", "formula=megatron factor=0.75 policy=weight renorm=none",
     lambda l: megatron_drop(l, 4, 0.75, "probs"))
case("tutel_bpr_top4_e16", 16, 4, 64, "tutel,4", "formula=tutel factor=0.75 policy=batch_prioritized renorm=none",
     lambda l: tutel_gating(l, 4, 0.75, True))


def deepspeed_topk_grid(path):
    """DeepSpeed topkgating's capacity: _capacity(gates, torch.tensor(capacity_factor * k), ...)
    = ceil((num_tokens / num_experts) * capacity_factor), a Python float times a float32
    tensor. One line per case: T E k cf capacity."""
    lines = ["# T E k cf capacity (torch: ceil((T / E) * torch.tensor(cf * k)))"]
    for T in (7, 33, 100, 128, 333, 1000, 4096):
        for E in (3, 7, 8, 16, 60):
            for k in (1, 2, 3, 6):
                for cf in (0.3, 1.0, 1.1, 1.25, 1.7):
                    cap = int(torch.ceil((T / E) * torch.tensor(cf * k)).item())
                    lines.append(f"{T} {E} {k} {cf!r} {cap}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy") or f == "cases.txt":
            os.remove(os.path.join(OUT, f))
    gen = torch.Generator().manual_seed(20261123)
    lines = ["# name router drop-config capacity (generated by tests/gen_capacity_golden.py; do not edit)"]
    for name, e, k, t, router, drop, ref in CASES:
        # Skewed logits so that some experts overflow.
        logits = torch.randn(t, e, generator=gen) * 1.5 - torch.log(torch.arange(1, e + 1).float()) * 1.2
        with torch.no_grad():
            idx, w, capacity = ref(logits.clone())
        np.save(os.path.join(OUT, name + ".logits.npy"), logits.numpy().astype(np.float32))
        np.save(os.path.join(OUT, name + ".indices.npy"), idx.numpy().astype(np.int32))
        np.save(os.path.join(OUT, name + ".weights.npy"), w.float().numpy().astype(np.float32))
        lines.append(f"{name} {router} {drop} capacity={capacity}")
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} cases to {OUT}")
    deepspeed_topk_grid(os.path.join(OUT, "deepspeed_topk.txt"))


if __name__ == "__main__":
    main()
