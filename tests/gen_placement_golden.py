#!/usr/bin/env python3
"""Golden cases for moe's EPLB (placement.hpp rebalance_experts): a torch statement of DeepSeek's
published algorithm (deepseek-ai/EPLB eplb.py: balanced_packing, replicate_experts,
rebalance_experts_hierarchical, rebalance_experts), step for step with its float32 tensors.
One deviation, stated: EPLB sorts with torch's unstable sort, so its order among equal loads
is unspecified; this statement sorts stably (ties -> lower index), as moe does. The random
cases draw real-valued loads, where no tie occurs.

Writes tests/data/placement/<case>.{loads,phy2log,log2phy,logcnt}.npy and cases.txt:
    python3 tests/gen_placement_golden.py      (Debian python3-torch, python3-numpy)
"""
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "placement")


def balanced_packing(weight, num_packs):
    num_layers, num_groups = weight.shape
    assert num_groups % num_packs == 0
    groups_per_pack = num_groups // num_packs
    if groups_per_pack == 1:
        pack_index = torch.arange(weight.size(-1), dtype=torch.int64).expand(weight.shape)
        return pack_index, torch.zeros_like(weight, dtype=torch.int64)
    indices = weight.float().sort(stable=True, dim=-1, descending=True).indices
    pack_index = torch.full_like(weight, fill_value=-1, dtype=torch.int64)
    rank_in_pack = torch.full_like(pack_index, fill_value=-1)
    for i in range(num_layers):
        pack_weights = [0] * num_packs
        pack_items = [0] * num_packs
        for group in indices[i]:
            pack = min((p for p in range(num_packs) if pack_items[p] < groups_per_pack), key=pack_weights.__getitem__)
            pack_index[i, group] = pack
            rank_in_pack[i, group] = pack_items[pack]
            pack_weights[pack] += weight[i, group]
            pack_items[pack] += 1
    return pack_index, rank_in_pack


def replicate_experts(weight, num_phy):
    n, num_log = weight.shape
    assert num_phy >= num_log
    phy2log = torch.arange(num_phy, dtype=torch.int64).repeat(n, 1)
    rank = torch.zeros(n, num_phy, dtype=torch.int64)
    logcnt = torch.ones(n, num_log, dtype=torch.int64)
    arangen = torch.arange(n, dtype=torch.int64)
    for i in range(num_log, num_phy):
        redundant = (weight / logcnt).max(dim=-1).indices
        phy2log[:, i] = redundant
        rank[:, i] = logcnt[arangen, redundant]
        logcnt[arangen, redundant] += 1
    return phy2log, rank, logcnt


def inverse(perm):
    inv = torch.empty_like(perm)
    inv.scatter_(1, perm, torch.arange(perm.size(1), dtype=torch.int64).expand(perm.shape))
    return inv


def hierarchical(weight, num_physical, num_groups, num_nodes, num_gpus):
    num_layers, num_logical = weight.shape
    group_size = num_logical // num_groups
    groups_per_node = num_groups // num_nodes
    phy_per_gpu = num_physical // num_gpus
    tokens_per_group = weight.unflatten(-1, (num_groups, group_size)).sum(-1)
    gpi, grk = balanced_packing(tokens_per_group, num_nodes)
    log2mlog = (((gpi * groups_per_node + grk) * group_size).unsqueeze(-1) + torch.arange(group_size)).flatten(-2)
    mlog2log = inverse(log2mlog)
    tokens_per_mlog = weight.gather(-1, mlog2log).view(-1, num_logical // num_nodes)
    phy2mlog, phyrank, mlogcnt = replicate_experts(tokens_per_mlog, num_physical // num_nodes)
    tokens_per_phy = (tokens_per_mlog / mlogcnt).gather(-1, phy2mlog)
    pack_index, rank_in_pack = balanced_packing(tokens_per_phy, num_gpus // num_nodes)
    phy2pphy = pack_index * phy_per_gpu + rank_in_pack
    pphy2phy = inverse(phy2pphy)
    pphy2mlog = phy2mlog.gather(-1, pphy2phy)
    pphy2mlog = (pphy2mlog.view(num_layers, num_nodes, -1) +
                 torch.arange(0, num_logical, num_logical // num_nodes).view(1, -1, 1)).flatten(-2)
    pphy2log = mlog2log.gather(-1, pphy2mlog)
    pphyrank = phyrank.gather(-1, pphy2phy).view(num_layers, -1)
    logcnt = mlogcnt.view(num_layers, -1).gather(-1, log2mlog)
    return pphy2log, pphyrank, logcnt


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus):
    num_layers, num_logical = weight.shape
    weight = weight.float()
    if num_groups % num_nodes == 0:
        phy2log, phyrank, logcnt = hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus)
    else:
        phy2log, phyrank, logcnt = hierarchical(weight, num_replicas, 1, 1, num_gpus)
    maxlogcnt = int(logcnt.max().item())
    log2phy = torch.full((num_layers, num_logical, maxlogcnt), -1, dtype=torch.int64)
    log2phy.view(num_layers, -1).scatter_(-1, phy2log * maxlogcnt + phyrank,
                                          torch.arange(num_replicas, dtype=torch.int64).expand(num_layers, -1))
    return phy2log, log2phy, logcnt


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(20261202)
    readme = torch.tensor([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                           [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], dtype=torch.float32)
    cases = [("readme", readme, 16, 4, 2, 8)]
    for name, L, E, P, G, N, D in [("hier_e16", 3, 16, 24, 4, 2, 4), ("hier_e64", 2, 64, 80, 8, 4, 8),
                                   ("global_odd_groups", 2, 12, 16, 3, 2, 4), ("global_e32", 3, 32, 48, 1, 1, 8),
                                   ("no_redundancy", 2, 16, 16, 4, 2, 4), ("one_device", 2, 8, 12, 2, 1, 1),
                                   ("skewed", 4, 32, 64, 4, 2, 8)]:
        w = torch.rand(L, E, generator=g) * 1000
        if name == "skewed":
            w = w * torch.linspace(0.05, 3.0, E) ** 3
        cases.append((name, w.float(), P, G, N, D))
    lines = ["# name num_replicas num_groups num_nodes num_devices (generated by tests/gen_placement_golden.py; do not edit)"]
    for name, w, P, G, N, D in cases:
        phy2log, log2phy, logcnt = rebalance_experts(w, P, G, N, D)
        np.save(os.path.join(OUT, f"{name}.loads.npy"), w.numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"{name}.phy2log.npy"), phy2log.numpy().astype(np.int32))
        np.save(os.path.join(OUT, f"{name}.log2phy.npy"), log2phy.numpy().astype(np.int32))
        np.save(os.path.join(OUT, f"{name}.logcnt.npy"), logcnt.numpy().astype(np.int32))
        lines.append(f"{name} {P} {G} {N} {D}")
        if name == "readme":  # EPLB's README prints this output
            assert phy2log.tolist() == [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]], phy2log
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
