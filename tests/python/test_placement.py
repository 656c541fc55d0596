"""Placement and offloading from Python: EPLB against its README example and the torch statement
of the published algorithm (tests/gen_placement_golden.py), SRP / SCH against a NumPy statement
of the definitions (and a trace worked by hand), the cache policies."""
import os
import sys

import numpy as np
import pytest

import moe
from conftest import needs_torch, npy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def test_eplb_readme_example():
    w = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                  [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]], np.float32)
    p = moe.rebalance_experts(w, 16, 4, 2, 8)
    np.testing.assert_array_equal(p["phy2log"], [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                                                 [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])
    np.testing.assert_array_equal(p["logcnt"], npy("placement", "readme.logcnt.npy"))
    np.testing.assert_array_equal(p["log2phy"], npy("placement", "readme.log2phy.npy"))


@needs_torch
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eplb_matches_the_torch_statement(seed):
    import torch
    import gen_placement_golden as ref
    g = torch.Generator().manual_seed(seed)
    for L, E, P, G, N, D in [(2, 16, 24, 4, 2, 4), (3, 32, 40, 3, 2, 8), (1, 8, 8, 2, 1, 2)]:
        w = torch.rand(L, E, generator=g) * 100
        phy2log, log2phy, logcnt = ref.rebalance_experts(w, P, G, N, D)
        got = moe.rebalance_experts(w.numpy(), P, G, N, D)
        np.testing.assert_array_equal(got["phy2log"], phy2log.numpy())
        np.testing.assert_array_equal(got["log2phy"], log2phy.numpy())
        np.testing.assert_array_equal(got["logcnt"], logcnt.numpy())


def _segment_counts(x, E, L):
    """[segments, E]: activations of each expert in every sliding segment of L tokens."""
    T = x.shape[0]
    onehot = np.zeros((T, E), np.int64)
    for t in range(T):
        for e in x[t]:
            if e >= 0:
                onehot[t, e] += 1
    return np.stack([onehot[i:i + L].sum(0) for i in range(T - L + 1)])


def _srp_numpy(trace, E, layer, L):
    """SRP's definition in NumPy: counts per sliding segment, every threshold, sums over segments."""
    segs = _segment_counts(trace[layer], E, L)
    acts = segs.sum()
    best = 0.0
    for th in range(L + 1):
        sel = segs >= th
        matches = segs[sel].sum()
        preds = sel.sum() * L
        best = max(best, 2 * matches / max(preds + acts, 1))
    return best


def _sch_numpy(trace, E, layer, L, m):
    segs = _segment_counts(trace[layer], E, L)
    top = -np.sort(-segs, axis=1)[:, :m]
    return top.sum() / segs.sum()


def test_srp_sch_by_hand_and_against_numpy():
    hand = np.array([[[0], [0], [1], [0]]], np.int32)  # experts 0 0 1 0, k = 1, E = 3
    r = moe.segment_routing_performance(hand, 3, segment=2)
    assert r["srp"] == pytest.approx(0.75) and r["threshold"] == 1  # 2*6 / (5*2 + 6)
    assert moe.segment_cache_hit_rate(hand, 3, 1, segment=2) == pytest.approx(4 / 6)
    tr = moe.synthetic_trace(2, 64, 8, 2, affinity=2.0, skew="zipf:1", seed=3)
    assert tr.shape == (2, 64, 2) and tr.dtype == np.int32
    for layer in (0, 1):
        for L in (1, 4, 16):
            assert moe.segment_routing_performance(tr, 8, layer=layer, segment=L)["srp"] == pytest.approx(_srp_numpy(tr, 8, layer, L))
            for m in (1, 2, 4):
                assert moe.segment_cache_hit_rate(tr, 8, m, layer=layer, segment=L) == pytest.approx(_sch_numpy(tr, 8, layer, L, m))


def test_transition_counts_numpy_statement():
    tr = moe.synthetic_trace(3, 50, 6, 2, seed=1)
    c = moe.transition_counts(tr, 6)
    want = np.zeros((2, 6, 6))
    for l in range(2):
        for t in range(50):
            for a in tr[l, t]:
                for b in tr[l + 1, t]:
                    want[l, a, b] += 1
    np.testing.assert_array_equal(c, want)


def test_cache_policies_and_affinity():
    seq = np.array([[[0], [1], [2], [0], [1], [2]]], np.int64)
    assert moe.simulate_cache(seq, 3, 2, policy="lru")["hits"] == 0
    opt = moe.simulate_cache(seq, 3, 2, policy="belady", expert_bytes=10.0)
    assert opt["hits"] == 2 and opt["loads"] == 4 and opt["bytes_per_token"] == pytest.approx(40 / 6)
    tr = moe.synthetic_trace(4, 300, 16, 2, affinity=6.0, seed=2)
    loads = {p: moe.simulate_cache(tr, 16, 4, policy=p)["loads"] for p in ("lru", "lfu", "belady", "prefetch")}
    assert loads["belady"] == min(loads.values())
    a = moe.affinity_placement(tr, 16, 4)
    assert a["devices"].shape == (4, 16) and a["crossing_fraction"] < a["contiguous_crossing_fraction"]
    with pytest.raises(moe.Error) as e:
        moe.simulate_cache(tr, 16, 4, policy="fifo")
    assert e.value.id == "moe.offload.policy"
    with pytest.raises(moe.Error) as e:
        moe.rebalance_experts(np.ones((1, 8), np.float32), 6, 1, 1, 2)
    assert str(e.value) == "[moe.placement.replicas] num_replicas=6 is fewer than the 8 experts (each needs one)"
    with pytest.raises(moe.Error) as e:
        moe.simulate_cache(np.full((1, 2, 1), 9), 4, 2)
    assert e.value.id == "moe.trace.index"
