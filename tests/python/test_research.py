"""Routing research tools (issue 28) from Python: replay (bit for bit on every preset and on the
golden checkpoints' blocks), smart expert reduction against a NumPy statement of the rule,
routing statistics against NumPy statements, bad replay input verbatim, routing records (the
files checked with NumPy and json alone), the expert-reduction table, docs/research.md's examples."""
import numpy as np
import pytest

import moe
from conftest import data

FAMILIES = ["mixtral", "minimax_m2", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe", "dots1",
            "ernie4_5_moe", "qwen3_next", "hunyuan_v1_moe", "longcat_flash", "gpt_oss", "llama4", "granitemoeshared", "dbrx"]


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


def test_a_record_of_every_layer_replays_bit_for_bit(tmp_path):
    # Record a checkpoint's forward layer by layer, write it, check the files with NumPy and
    # json alone, read it back and replay each layer.
    path = data("models", "qwen3_moe")
    layers = moe.moe_layers(path)
    x = np.load(data("models", "qwen3_moe", "x.npy"))
    blocks = [moe.MoeBlock.from_checkpoint(path, l) for l in layers]
    ys, idx, w = [], [], []
    for b in blocks:
        ys.append(b.forward(x))
        idx.append(b.last_routing().indices.copy())
        w.append(b.last_routing().weights.copy())
    moe.write_record(tmp_path, np.stack(idx), np.stack(w), num_experts=blocks[0].spec["num_experts"], layers=layers,
                     model="qwen3_moe", recipe="qwen3_moe")
    import json
    side = json.loads((tmp_path / "record.json").read_text())
    assert side["format"] == "moe.routing_record" and side["version"] == 1 and side["tie_rule"] == "lower_index"
    assert side["layers"] == layers and side["top_k"] == idx[0].shape[1]
    assert side["recipe"]["preset"] == "qwen3_moe"
    assert np.array_equal(np.load(tmp_path / "indices.npy"), np.stack(idx))
    assert np.load(tmp_path / "weights.npy").dtype == np.float32
    rec = moe.read_record(tmp_path)
    assert rec["layers"] == layers and rec["model"] == "qwen3_moe" and rec["recipe"]["top_k"] == side["recipe"]["top_k"]
    for pos, b in enumerate(blocks):
        y = b.forward(x, replay=rec["indices"][pos], replay_weights=rec["weights"][pos])
        assert y.tobytes() == ys[pos].tobytes()
    # Indices only: no weights.npy; the router's scores weigh the replay, bit for bit as well.
    moe.write_record(tmp_path, np.stack(idx), layers=layers)
    assert not (tmp_path / "weights.npy").exists()
    rec = moe.read_record(tmp_path)
    assert rec["weights"] is None and rec["num_experts"] == int(np.stack(idx).max()) + 1
    assert blocks[0].forward(x, replay=rec["indices"][0]).tobytes() == ys[0].tobytes()


def test_bad_records_are_refused_verbatim(tmp_path):
    idx = np.array([[[0, 1], [2, 3], [1, 0]]], dtype=np.int32)
    with pytest.raises(moe.Error) as e:
        moe.write_record(tmp_path, idx, num_experts=3)
    assert str(e.value) == "[moe.trace.index] layer 0, token 1 holds expert 3, outside [-1, 3)"
    with pytest.raises(moe.Error) as e:
        moe.write_record(tmp_path, idx, np.full((1, 3, 2), np.nan, np.float32))
    assert str(e.value) == "[moe.record.weights] layer 0, token 0, slot 0 is not finite"
    with pytest.raises(moe.Error) as e:
        moe.write_record(tmp_path, idx, np.zeros((1, 2, 2), np.float32))
    assert str(e.value) == "[moe.record.shape] weights must be [L, T, k] = [1, 3, 2] like indices"
    with pytest.raises(moe.Error) as e:
        moe.read_record(tmp_path / "none")
    assert str(e.value).startswith("[moe.record.io] ") and "record.json: cannot open" in str(e.value)
    moe.write_record(tmp_path, idx)
    np.save(tmp_path / "indices.npy", np.array([[[0, 0], [2, 3], [1, 0]]], dtype=np.int64))
    with pytest.raises(moe.Error) as e:
        moe.read_record(tmp_path)
    assert str(e.value) == f"[moe.record.index] {tmp_path}/indices.npy: layer 0, token 0 lists expert 0 twice"


def test_compare_reduction_rows_are_what_the_block_computes():
    block = moe.MoeBlock.from_checkpoint(data("models", "qwen3_moe"), 1)
    x = np.load(data("models", "qwen3_moe", "x.npy"))
    rows = moe.compare_reduction(block, x, repeats=1)
    block.forward(x)
    assert np.all(block.last_routing().indices >= 0)  # the block routes the recipe's k again
    k = block.spec["router"]["top_k"]
    assert [r["policy"] for r in rows] == [f"top-{k} (recipe)", f"top-{k - 1}", f"top-{k // 2}", "ser:1,0.1", "ser:1,0.3",
                                           "ser:1,0.5"]
    assert rows[0]["experts_per_token"] == k and rows[0]["rel_l2"] == 0 and rows[0]["max_abs"] == 0
    y_full = block.forward(x).astype(np.float64)
    for r in rows[1:]:
        name = r["policy"]
        if name.startswith("top-"):
            block.set_reduction(int(name[4:]))
        else:
            km, t = name[4:].split(",")
            block.set_reduction(ser=(int(km), float(t)))
        y = block.forward(x).astype(np.float64)
        ept = np.count_nonzero(block.last_routing().indices >= 0) / x.shape[0]
        assert r["experts_per_token"] == pytest.approx(ept, abs=0)
        assert r["decode_bytes"] == pytest.approx(ept * block.expert_bytes)
        assert r["rel_l2"] == pytest.approx(np.linalg.norm(y - y_full) / np.linalg.norm(y_full), rel=1e-12)
        assert r["max_abs"] == pytest.approx(np.abs(y - y_full).max(), rel=1e-12)
        assert r["ms"] > 0
    # fewer experts, larger change; SER in between top-k's
    assert rows[1]["experts_per_token"] == k - 1 and rows[1]["rel_l2"] > 0
    assert rows[3]["experts_per_token"] >= rows[5]["experts_per_token"] >= 1
    table = moe.policy_table(rows)
    assert list(table["policy"]) == [r["policy"] for r in rows]
    assert np.array_equal(table["rel_l2"], [r["rel_l2"] for r in rows])
    with pytest.raises(moe.Error) as e:
        moe.compare_reduction(block, x, ["top-x"])
    assert str(e.value) == "[moe.python.policy] unknown reduction policy 'top-x' (expected 'recipe', 'top-K' or 'ser:KMIN,T')"
    with pytest.raises(moe.Error) as e:
        moe.compare_reduction(block, x, [f"top-{k + 1}"])
    assert str(e.value) == f"[moe.router.top_k] top_k={k + 1} must be in [1, the recipe's k={k}]"


def test_the_research_page_examples_run(tmp_path, monkeypatch, capsys):
    # docs/research.md's three worked examples, in order, in one namespace (example 3 reads the
    # record example 1 wrote), with tests/data/ pointing at the test data.
    import pathlib
    import re
    page = pathlib.Path(__file__).resolve().parents[2] / "docs" / "research.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in blocks:
        exec(compile(code.replace('"tests/data/', '"' + data() + "/"), str(page), "exec"), ns)
    assert (tmp_path / "rec" / "record.json").exists()
    assert "ser:1,0.3" in capsys.readouterr().out
