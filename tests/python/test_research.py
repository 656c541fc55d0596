"""Routing research tools (issue 28) from Python: replay (bit for bit on every preset and on the
golden checkpoints' blocks), smart expert reduction against a NumPy statement of the rule,
routing statistics against NumPy statements, bad replay input verbatim."""
import numpy as np
import pytest

import moe
from conftest import data

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss", "llama4",
            "granitemoeshared", "dbrx", "longcat_flash"]


@pytest.mark.parametrize("preset", [p for p in moe.preset_names if p not in ("switch",)])
def test_replay_reproduces_every_preset_bit_for_bit(preset):
    logits = moe.synthetic_logits(200, 32, skew="zipf:1.2", seed=3)
    try:
        r = moe.route(logits, preset, keep_scores=True)
    except moe.Error:
        pytest.skip("recipe for another expert count")
    q = moe.route(logits, preset, keep_scores=True, replay=r.indices)
    assert np.array_equal(q.indices, r.indices)
    assert q.weights.tobytes() == r.weights.tobytes()
    w = np.full_like(r.weights, 0.25)
    q2 = moe.route(logits, preset, replay=r.indices.astype(np.int64), replay_weights=w)
    assert np.array_equal(q2.weights, w)


@pytest.mark.parametrize("family", FAMILIES)
def test_block_replay_reproduces_the_forward(family):
    block = moe.MoeBlock.from_checkpoint(data("models", family), 1)
    x = np.load(data("models", family, "x.npy"))
    y = block.forward(x)
    rec = block.last_routing()
    idx, w = rec.indices.copy(), rec.weights.copy()
    y2 = block.forward(x, replay=idx)
    assert y2.tobytes() == y.tobytes()
    assert block.last_routing().weights.tobytes() == w.tobytes()
    y3 = block.forward(x, replay=idx, replay_weights=w)
    assert y3.tobytes() == y.tobytes()


def _ser_statement(logits, k, k_min, thr, scaling=1.0, sigmoid=False):
    """SER in float64: scores, top-k by score (stable: lower index first), keep the first k_min and
    those >= thr x the top score, weights = kept scores / their sum x scaling."""
    l = logits.astype(np.float64)
    if sigmoid:
        s = 1.0 / (1.0 + np.exp(-l))
    else:
        e = np.exp(l - l.max(axis=1, keepdims=True))
        s = e / e.sum(axis=1, keepdims=True)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, order, axis=1)
    keep = (np.arange(k)[None, :] < k_min) | (top >= thr * top[:, :1])
    idx = np.where(keep, order, -1)
    w = np.where(keep, top, 0.0)
    w = w / w.sum(axis=1, keepdims=True) * scaling
    return idx, w


@pytest.mark.parametrize("k_min,thr", [(1, 0.0), (1, 0.4), (2, 0.6), (1, 1.0)])
def test_ser_matches_a_numpy_statement(k_min, thr):
    logits = moe.synthetic_logits(400, 32, skew="zipf:1.0", seed=7)
    r = moe.route(logits, "qwen3_moe", top_k=6, ser=(k_min, thr))
    idx, w = _ser_statement(logits, 6, k_min, thr)
    # kept slots move to the front in their order; the statement leaves holes: compact it
    ci = np.full_like(idx, -1)
    cw = np.zeros_like(w)
    for t in range(idx.shape[0]):
        kept = idx[t] >= 0
        ci[t, :kept.sum()] = idx[t][kept]
        cw[t, :kept.sum()] = w[t][kept]
    assert np.array_equal(r.indices, ci)
    np.testing.assert_allclose(r.weights, cw, rtol=4e-7, atol=1e-9)
    ds = moe.route(logits, "deepseek_v3", num_groups=0, group_top_k=0, top_k=6, ser=(k_min, thr))
    idx, w = _ser_statement(logits, 6, k_min, thr, scaling=2.5, sigmoid=True)
    assert np.array_equal(np.sort(ds.indices, axis=1), np.sort(idx, axis=1))
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "qwen3_moe", ser=(9, 0.5))
    assert str(e.value) == "[moe.selection.ser] k_min=9 must be in [1, top_k=8]"


def _stats_statement(idx, E, capacity=0):
    flat = idx[idx >= 0]
    load = np.bincount(flat, minlength=E).astype(np.float64)
    n = load.sum()
    mean = n / E
    p = load[load > 0] / n
    prev_overlap = []
    for t in range(1, idx.shape[0]):
        a = set(idx[t][idx[t] >= 0].tolist())
        b = set(idx[t - 1][idx[t - 1] >= 0].tolist())
        if a:
            prev_overlap.append(len(a & b) / len(a))
    return dict(load=load, max_over_mean=load.max() / mean, cv=load.std() / mean, jain=n * n / (E * (load ** 2).sum()),
                load_entropy=-(p * np.log(p)).sum(), adjacent_overlap=np.mean(prev_overlap),
                drop_rate=np.maximum(load - capacity, 0).sum() / n if capacity else 0.0)


def test_routing_stats_match_numpy_statements():
    logits = moe.synthetic_logits(300, 16, skew="zipf:1.3", seed=5)
    r = moe.route(logits, "mixtral", top_k=2, keep_scores=True)
    s = moe.routing_stats(r.indices, 16, scores=r.scores, capacity=45)
    ref = _stats_statement(r.indices, 16, 45)
    assert np.array_equal(s["load"], ref["load"])
    for key in ("max_over_mean", "cv", "jain", "load_entropy", "adjacent_overlap", "drop_rate"):
        assert s[key] == pytest.approx(ref[key], rel=1e-12), key
    q = r.scores.astype(np.float64)
    q = q / q.sum(axis=1, keepdims=True)
    ent = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)).sum(axis=1).mean()
    assert s["routing_entropy"] == pytest.approx(ent, rel=1e-9)
    assert np.isnan(moe.routing_stats(r.indices, 16)["routing_entropy"])


def test_routing_stats_of_a_trace():
    tr = moe.synthetic_trace(4, 250, 16, 2, affinity=4.0, seed=2)
    s = moe.routing_stats(tr, 16, capacity=40)
    assert s["load"].shape == (4, 16)
    for l in range(4):
        ref = _stats_statement(tr[l], 16, 40)
        assert np.array_equal(s["load"][l], ref["load"])
        assert s["jain"][l] == pytest.approx(ref["jain"], rel=1e-12)
        assert s["drop_rate"][l] == pytest.approx(ref["drop_rate"], rel=1e-12)
    for l in range(1, 4):
        ov = [len(set(tr[l, t]) & set(tr[l - 1, t])) / len(set(tr[l, t])) for t in range(250)]
        assert s["layer_overlap"][l - 1] == pytest.approx(np.mean(ov), rel=1e-12)
    assert np.array_equal(s["total"]["load"], s["load"].sum(axis=0))


def test_bad_replay_input_is_refused_verbatim():
    logits = moe.synthetic_logits(3, 4)
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", replay=np.array([[0, 1], [1, 2]]))
    assert str(e.value) == "[moe.replay.shape] replayed indices are 2 x 2, expected tokens x k = 3 x 2"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", replay=np.array([[0, 1, 2]] * 3))
    assert str(e.value) == "[moe.replay.shape] replayed indices are 3 x 3, expected tokens x k = 3 x 2"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", replay=np.array([[0, 1], [1, 4], [0, 1]]))
    assert str(e.value) == "[moe.replay.index] token 1, slot 1 holds expert 4, outside [-1, 4)"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", replay=np.array([[0, 1], [1, 2], [0, 1]]), replay_weights=np.array([[1, 0], [np.nan, 0], [1, 0]]))
    assert str(e.value) == "[moe.replay.weights] token 1, slot 0 has weight nan: replayed weights must be finite"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", replay=np.array([[0.0, 1.0]] * 3))
    assert str(e.value) == "[moe.python.dtype] replay must be an integer array, got float64"
