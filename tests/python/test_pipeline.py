"""Capacity, dispatch, metrics, noise, blocks and the policy comparison: the capacity goldens
(Megatron / DeepSpeed / Tutel), a torch statement of Megatron's token dropping, gather/combine
against a NumPy statement, the model blocks against their HF goldens (tests/data/models)."""
import numpy as np
import pytest

import moe
from conftest import cases, data, needs_torch, npy

CAP_CASES = cases("capacity")
EPS32 = 1.1920928955078125e-7


def _router(spec):
    name, k = spec.split(",")
    k = int(k)
    if name == "megatron_pre":
        return dict(preset="megatron", top_k=k, pre_softmax=True, keep_scores=True)
    if name == "softmax_raw":
        return dict(preset="qwen2_moe", top_k=k, renorm="none", keep_scores=True)
    if name == "tutel":
        return dict(preset="mixtral", top_k=k, renorm="clamp", renorm_eps=EPS32, keep_scores=True)
    raise AssertionError(spec)


@pytest.mark.parametrize("name,words,kv", CAP_CASES, ids=[c[0] for c in CAP_CASES])
def test_capacity_goldens(name, words, kv):
    logits = npy("capacity", name + ".logits.npy")
    r = moe.route(logits, **_router(words[0]))
    before = np.array(r.indices)
    extra = dict(renorm_after="clamp", renorm_eps=EPS32) if kv["renorm"] == "clamp" else {}
    rep = moe.apply_capacity(r, formula=kv["formula"], factor=float(kv["factor"]), min_capacity=int(kv.get("min", 0)),
                             policy=kv["policy"], **extra)
    assert rep["capacity"] == int(kv["capacity"])
    want = npy("capacity", name + ".indices.npy")
    np.testing.assert_array_equal(r.indices, want)
    np.testing.assert_allclose(r.weights, npy("capacity", name + ".weights.npy"), rtol=8 * EPS32, atol=1e-37)
    # Nothing is lost: each slot is routed, or reported dropped.
    dropped = set(rep["dropped"].tolist())
    flat_before, flat_after = before.reshape(-1), np.asarray(r.indices).reshape(-1)
    for i in range(flat_before.size):
        assert (i in dropped) == (flat_before[i] >= 0 and flat_after[i] < 0)
    assert np.all(rep["load_after"] <= rep["capacity"])


@needs_torch
def test_megatron_token_dropping_statement():
    import torch
    torch.manual_seed(0)
    T, E, K, cf = 64, 8, 2, 1.0
    logits = torch.randn(T, E)
    # Megatron-Core topk_softmax_with_capacity, pre-softmax, drop_policy="probs"
    probs_all = torch.softmax(logits, dim=-1)
    probs, top_indices = torch.topk(probs_all, K, dim=1)
    capacity = int(np.ceil(T * K / E * cf))
    topk_masked_gates = torch.zeros_like(logits).scatter(1, top_indices, probs)
    topk_mask = torch.zeros_like(logits).scatter(1, top_indices, 1)
    _, capacity_indices = torch.topk(topk_masked_gates, k=capacity, dim=0, sorted=False)
    capacity_mask = torch.zeros_like(logits).scatter(0, capacity_indices, 1)
    final_mask = torch.logical_and(topk_mask.bool(), capacity_mask.bool())
    final_probs = topk_masked_gates * final_mask

    r = moe.route(logits, "megatron", top_k=K, pre_softmax=True)
    rep = moe.apply_capacity(r, formula="megatron", factor=cf, policy="weight")
    assert rep["capacity"] == capacity
    got = torch.zeros(T, E)
    for t in range(T):
        for s in range(K):
            e = int(r.indices[t, s])
            if e >= 0:
                got[t, e] = r.weights[t, s]
    torch.testing.assert_close(got, final_probs, rtol=2e-7, atol=0)


def test_plan_gather_combine_against_numpy():
    rng = np.random.default_rng(0)
    T, E, H = 37, 6, 5
    x = rng.standard_normal((T, H)).astype(np.float32)
    r = moe.route(moe.synthetic_logits(T, E, seed=1), "mixtral")
    moe.apply_capacity(r, factor=1.0)
    plan = moe.make_plan(r, block=4)
    assert plan.num_rows % 4 == 0 or plan.num_rows == int(np.sum((plan.counts + 3) // 4 * 4))
    rows = moe.gather(x, plan)
    idx, w = np.asarray(r.indices), np.asarray(r.weights)
    for t in range(T):
        for s in range(2):
            if idx[t, s] >= 0:
                np.testing.assert_array_equal(rows[plan.slot_row[t, s]], x[t])
    scale = np.zeros((plan.num_rows, 1), np.float32)  # "expert" e multiplies by e + 1
    for e in range(E):
        scale[plan.offsets[e]:plan.offsets[e + 1]] = e + 1
    y = moe.combine(rows * scale, plan, r)
    want = np.zeros((T, H), np.float64)
    for t in range(T):
        for s in range(2):
            if idx[t, s] >= 0:
                want[t] += float(w[t, s]) * (idx[t, s] + 1) * x[t]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    m = moe.measure(r, plan=plan)
    assert m["routed"] + m["dropped"] == T * 2 - 0 or m["routed"] == int((idx >= 0).sum())
    np.testing.assert_array_equal(m["load"], r.tokens_per_expert())
    v = moe.to_vllm_layout(plan)
    assert v["num_tokens_post_pad"] == plan.num_rows


def test_measure_counts_drops():
    r = moe.route(moe.synthetic_logits(100, 8, skew="zipf:1.5"), "mixtral")
    rep = moe.apply_capacity(r, factor=0.5)
    m = moe.measure(r, rep)
    assert m["dropped"] == len(rep["dropped"]) > 0
    assert m["routed"] == int((np.asarray(r.indices) >= 0).sum())
    assert abs(m["drop_rate"] - m["dropped"] / 200) < 1e-12


def test_noise_is_seeded_and_thread_independent():
    x = moe.synthetic_logits(64, 16)
    a = moe.add_gumbel_noise(x, seed=7, threads=1)
    b = moe.add_gumbel_noise(x, seed=7, threads=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, moe.add_gumbel_noise(x, seed=8))
    assert not np.array_equal(a, x)  # a copy, the input untouched
    j = moe.apply_jitter(x, 0.01, seed=1)
    assert np.all(np.abs(j / x - 1) <= 0.01 + 1e-6)


def test_fill_in_and_null_experts():
    r = moe.route(moe.synthetic_logits(64, 8, skew="zipf:1.2"), "mixtral", keep_scores=True)
    rep = moe.apply_capacity(r, factor=1.0, policy="position")
    r2, info = moe.fill_in(r, rep["capacity"])
    assert info["filled"] > 0
    assert np.all(r2.tokens_per_expert() <= rep["capacity"])
    s = moe.strip_null_experts(moe.route(moe.synthetic_logits(16, 10), "mixtral"), 8)
    assert np.all(np.asarray(s.indices) < 8)


MODELS = ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "llama4", "olmoe", "qwen3_moe"]


@pytest.mark.parametrize("name", MODELS)
def test_blocks_from_hf_checkpoints_match_torch(name):
    path = data("models", name)
    spec, weights = moe.load_block(path, 1)
    block = moe.MoeBlock(spec, weights)
    x = npy("models", name, "x.npy")
    y = block.forward(x)
    np.testing.assert_array_equal(block.last_routing().indices, npy("models", name, "indices.npy"))
    y_ref = npy("models", name, "y.npy")
    assert np.abs(y - y_ref).max() <= 2e-5 * np.abs(y_ref).max()
    np.testing.assert_array_equal(block.forward(x, threads=1), y)  # the same bits on one thread


def test_quantized_block_and_gguf():
    path = data("models", "mixtral")
    x = npy("models", "mixtral", "x.npy")
    y_ref = npy("models", "mixtral", "y.npy")
    spec, weights = moe.load_block(path + "/model.gguf")  # the first MoE layer (1 in this file)
    hf_spec, hf_weights = moe.load_block(path, 1)
    assert moe.moe_layers(path + "/model.gguf") == [1] and moe.moe_layers(path) == [0, 1]
    # The same block, but llama.cpp renormalises as w / max(sum w, 2^-14) where HF divides by the sum.
    assert (spec["router"]["renorm"], spec["router"]["renorm_eps"]) == ("clamp", 2.0**-14)
    assert hf_spec["router"]["renorm"] == "sum"
    for s in (spec, hf_spec):
        del s["family"], s["router"]["renorm"], s["router"]["renorm_eps"]
    assert spec == hf_spec
    for k in hf_weights:
        np.testing.assert_array_equal(weights[k], hf_weights[k], err_msg=k)
    q = moe.MoeBlock.from_checkpoint(path, 1, format="bf16")
    assert q.format == "bf16" and q.expert_bytes == 3 * 32 * 16 * 2
    err = np.abs(q.forward(x) - y_ref).max() / np.abs(y_ref).max()
    assert 0 < err < 0.02  # bf16 rounding of the weights, not a wrong layer
    with pytest.raises(moe.Error) as e:  # this tiny model's ffn (16) is below q8_0's block
        moe.MoeBlock(spec, weights, format="q8_0")
    assert str(e.value) == "[moe.kernels.format] q8_0: K=16 is not a positive multiple of the block 32"
    with pytest.raises(moe.Error) as e:
        moe.MoeBlock(spec, weights, format="q9")
    assert e.value.id == "moe.kernels.format"
    with pytest.raises(moe.Error) as e:
        moe.load_block(data("models", "nope"))
    assert e.value.id.startswith("moe.io")


def test_blocks_from_checkpoints_keep_the_files_formats():
    # GPT-OSS MXFP4 (biases, clamped SwiGLU) and a Q4_K_M GGUF run in their own formats.
    mx = data("models", "gpt_oss_mxfp4")
    q = moe.MoeBlock.from_checkpoint(mx, 1)
    f = moe.MoeBlock.from_checkpoint(mx, 1, format="f32")
    assert (q.format, f.format) == ("mxfp4", "f32")
    assert q.expert_bytes * 6 < f.expert_bytes
    x = npy("models", "gpt_oss_mxfp4", "x.npy")
    np.testing.assert_array_equal(q.forward(x), f.forward(x))  # weight-only: the float block's bits
    # The same MXFP4 values with llama.cpp's int8 activations: near, not equal (the bits change).
    d = moe.MoeBlock.from_checkpoint(mx, 1, format="mxfp4:dot")
    assert d.format == "mxfp4:dot"
    y_mx = q.forward(x)
    err = np.linalg.norm(d.forward(x) - y_mx) / np.linalg.norm(y_mx)
    assert 1e-5 < err < 0.03
    km = data("models", "mixtral_q4_k_m", "model.gguf")
    b = moe.MoeBlock.from_checkpoint(km)
    assert b.format == "q4_k+q6_k"
    y_ref = npy("models", "mixtral_q4_k_m", "y.npy")
    err = np.linalg.norm(b.forward(npy("models", "mixtral_q4_k_m", "x.npy")) - y_ref) / np.linalg.norm(y_ref)
    assert 1e-5 < err < 0.02
    # Q5_K_M, IQ4_XS, Q3_K_M and Q2_K files too: each in its own formats, near torch on numpy's
    # dequantization.
    for name, fmt in (("mixtral_q5_k_m", "q5_k+q6_k"), ("mixtral_iq4_xs", "iq4_xs"), ("mixtral_q3_k_m", "q3_k+q4_k"),
                      ("mixtral_q2_k", "q2_k+q3_k"), ("mixtral_q4_k_m_f96", "q4_k+q5_0"),
                      ("mixtral_q4_k_m_f96_q8", "q4_k+q8_0"), ("mixtral_q5_k_m_f96", "q5_k+q5_1"),
                      ("mixtral_q5_k_m_f96_q8", "q5_k+q8_0"), ("mixtral_mxfp4", "mxfp4:dot")):
        b = moe.MoeBlock.from_checkpoint(data("models", name, "model.gguf"))
        assert b.format == fmt
        y_ref = npy("models", name, "y.npy")
        err = np.linalg.norm(b.forward(npy("models", name, "x.npy")) - y_ref) / np.linalg.norm(y_ref)
        assert 1e-5 < err < 0.02
    with pytest.raises(moe.Error) as e:
        moe.MoeBlock.from_checkpoint(km, format="q9")
    assert e.value.id == "moe.kernels.format"


def test_per_expert_formats():
    # Each expert in its own format: with top-1 routing (weight exactly 1) every token's output is
    # the output of the block of its expert's format, bit for bit.
    spec, weights = moe.load_block(data("models", "mixtral_q4_k_m", "model.gguf"))
    spec["router"]["top_k"] = 1
    x = npy("models", "mixtral_q4_k_m", "x.npy")
    names = ["q8_0", "q4_k", "f32"]
    b = moe.MoeBlock(spec, weights, format=names)
    assert b.format == "q8_0,q4_k,f32"
    y = b.forward(x)
    idx = b.last_routing().indices[:, 0]
    assert len(set(idx.tolist())) == 3
    singles = {n: moe.MoeBlock(spec, weights, format=n).forward(x) for n in names}
    for t, e in enumerate(idx):
        np.testing.assert_array_equal(y[t], singles[names[e]][t])
    assert not np.array_equal(y, singles["f32"])
    # One name stands for every expert: the single-format block, bit for bit.
    np.testing.assert_array_equal(moe.MoeBlock(spec, weights, format=["q4_k"]).forward(x), singles["q4_k"])
    assert b.expert_bytes == sum(moe.MoeBlock(spec, weights, format=n).expert_bytes for n in names) // 3
    with pytest.raises(moe.Error) as e:
        moe.MoeBlock(spec, weights, format=["q8_0", "q4_k"])
    assert str(e.value) == "[moe.layer.options] expert_formats has 2 names for 3 experts (give one, or one per expert)"
    with pytest.raises(moe.Error) as e:
        moe.MoeBlock(spec, weights, format=["q8_0", 4, "f32"])
    assert str(e.value) == "[moe.python.type] format list entries must be str, got 4"


def test_compare_policies_rows_and_table():
    logits = moe.synthetic_logits(512, 8, skew="zipf:1", seed=2)
    rows = moe.compare_policies(logits, ["dropless", "megatron-probs-1.0"], "mixtral", bias_steps=5)
    assert [r["policy"] for r in rows] == ["dropless", "megatron-probs-1.0"]
    assert rows[0]["drop_rate"] == 0.0 and rows[1]["drop_rate"] > 0
    assert rows[1]["max_load"] <= int(np.ceil(512 * 2 / 8 * 1.0))
    t = moe.policy_table(rows)
    assert t.dtype.names[0] == "policy" and t["drop_rate"][1] == rows[1]["drop_rate"]
    r = moe.route(logits, "mixtral")
    np.testing.assert_array_equal(rows[0]["load"], r.tokens_per_expert())
    with pytest.raises(moe.Error) as e:
        moe.compare_policies(logits, ["nope"])
    assert e.value.id == "moe.simulator.policy"


def test_legacy_deepseek_gguf_warns_once():
    import warnings
    path = data("models", "deepseek_v3", "model_legacy.gguf")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        spec, _ = moe.load_block(path)
    assert len(got) == 1 and issubclass(got[0].category, UserWarning)
    assert str(got[0].message).startswith("[moe.models.legacy] ") and "routing without group limits" in str(got[0].message)
    assert got[0].filename == __file__  # points at the caller
    assert spec["router"]["num_groups"] == 0
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        moe.load_block(data("models", "deepseek_v3", "model.gguf"))
    assert got == []
