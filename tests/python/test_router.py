"""moe.route against the C++ goldens (tests/data/router, generated from the peers' code) and
torch statements of the HF Mixtral / Qwen2-MoE / DeepSeek-V3 routers; inputs of every dtype
and layout; errors."""
import numpy as np
import pytest

import moe
from conftest import cases, needs_torch, npy

ROUTER_CASES = cases("router")


def _fields(kv):
    return dict(top_k=int(kv["k"]), score=kv["score"], pre_softmax=kv["pre"] == "1", renorm=kv["renorm"],
                renorm_eps=float(kv["eps"]), scaling_factor=float(kv["scale"]), num_groups=int(kv["groups"]),
                group_top_k=int(kv["gtk"]), group_score_top_m=int(kv["topm"]), mask=kv["mask"],
                select_on_logits=kv["sol"] == "1", weights_from_masked=kv["wfm"] == "1")


@pytest.mark.parametrize("name,words,kv", ROUTER_CASES, ids=[c[0] for c in ROUTER_CASES])
def test_router_goldens(name, words, kv):
    logits = npy("router", name + ".logits.npy")
    if words[0] == "bf16":  # float32 values that bfloat16 holds exactly
        assert np.array_equal(logits.view(np.uint32) & 0xFFFF, np.zeros(logits.shape, np.uint32))
    bias = npy("router", name + ".bias.npy") if kv["bias"] == "1" else None
    r = moe.route(logits if words[0] != "bf16" else _bf16_tensor(logits), bias=bias, **_fields(kv))
    idx, w = np.asarray(r.indices), np.asarray(r.weights)
    np.testing.assert_array_equal(idx, npy("router", name + ".indices.npy"))
    want = npy("router", name + ".weights.npy").astype(np.float64)
    np.testing.assert_allclose(w, want, rtol=8 * 1.1920929e-7, atol=1e-37)


def _bf16_tensor(values):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(values).to(torch.bfloat16)


def test_route_presets_match_their_fields():
    logits = moe.synthetic_logits(64, 64, skew="zipf:1", seed=3)
    for p in moe.preset_names:
        cfg = moe.router_config(p)
        a, b = moe.route(logits, p), moe.route(logits, **cfg)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.weights, b.weights)
    assert moe.router_config("mixtral", top_k=4)["top_k"] == 4


# -- torch statements of the peers ------------------------------------------------------------


@needs_torch
def test_hf_mixtral_router():
    import torch
    torch.manual_seed(0)
    logits = torch.randn(50, 8)
    # MixtralSparseMoeBlock.forward
    p = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = torch.topk(p, 2, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    r = moe.route(logits, "mixtral")
    assert isinstance(r.indices, torch.Tensor)
    assert torch.equal(r.indices.long(), idx)
    torch.testing.assert_close(r.weights, w, rtol=2e-7, atol=0)


@needs_torch
def test_hf_qwen2_moe_router():
    import torch
    torch.manual_seed(1)
    logits = torch.randn(40, 60)
    p = torch.softmax(logits, dim=1, dtype=torch.float)  # Qwen2MoeSparseMoeBlock, norm_topk_prob=False
    w, idx = torch.topk(p, 4, dim=-1)
    r = moe.route(logits, "qwen2_moe", top_k=4, renorm="none")
    assert torch.equal(r.indices.long(), idx)
    torch.testing.assert_close(r.weights, w, rtol=2e-7, atol=0)


@needs_torch
def test_hf_deepseek_v3_router():
    import torch
    torch.manual_seed(2)
    T, E, G, TG, K, scale = 33, 64, 8, 4, 8, 2.5
    logits = torch.randn(T, E)
    bias = torch.randn(E) * 0.1
    # DeepseekV3TopkRouter / DeepseekV3MoE.route_tokens_to_experts
    scores = logits.sigmoid()
    s = scores + bias
    group_scores = s.view(T, G, E // G).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=TG, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(T, G, E // G).reshape(T, E)
    s = s.masked_fill(~score_mask.bool(), 0.0)
    idx = torch.topk(s, k=K, dim=-1, sorted=False)[1]
    w = scores.gather(1, idx)
    w = w / (w.sum(dim=-1, keepdim=True) + 1e-20) * scale
    r = moe.route(logits, "deepseek_v3", bias=bias)
    # HF's topk(sorted=False) order is unspecified: compare the sets with their weights.
    got = sorted(zip(r.indices.tolist(), r.weights.tolist()))
    for t in range(T):
        mine = dict(zip(r.indices[t].tolist(), r.weights[t].tolist()))
        ref = dict(zip(idx[t].tolist(), w[t].tolist()))
        assert mine.keys() == ref.keys()
        for e in ref:
            assert abs(mine[e] - ref[e]) <= 4e-7 * abs(ref[e])
    assert got


# -- inputs: dtypes, layouts, zero copy --------------------------------------------------------


def test_layouts_give_the_same_routing():
    base = moe.synthetic_logits(40, 16, seed=5)
    want = moe.route(base, "mixtral")
    big = np.zeros((80, 48), np.float32)
    big[::2, 8:24] = base
    views = {
        "fortran": np.asfortranarray(base),
        "row-strided slice": big[::2, 8:24],
        "transpose of a transpose": base.T.copy().T,
        "float64": base.astype(np.float64),
        "float16": base.astype(np.float16),
    }
    for name, v in views.items():
        r = moe.route(v, "mixtral")
        np.testing.assert_array_equal(r.indices, want.indices if name != "float16" else moe.route(base.astype(np.float16).astype(np.float32), "mixtral").indices, err_msg=name)
        if name in ("fortran", "row-strided slice", "transpose of a transpose"):
            np.testing.assert_array_equal(r.weights, want.weights, err_msg=name)
    assert moe.route(base.astype(np.float64), "mixtral").weights.dtype == np.float64


def test_inputs_are_read_in_place_when_rows_are_contiguous():
    a = moe.synthetic_logits(16, 8)
    big = np.zeros((32, 20), np.float32)
    s = big[::2, 4:12]
    assert moe._core._input_address(a, False) == a.ctypes.data
    assert moe._core._input_address(s, False) == s.ctypes.data  # a slice: no copy
    f = np.asfortranarray(a)
    assert moe._core._input_address(f, False) != f.ctypes.data  # Fortran order: copied once


@needs_torch
def test_torch_tensors_in_place_and_bf16():
    import torch
    t = torch.randn(24, 8)
    arr, bf16, is_torch = moe._in(t, "t")
    assert is_torch and not bf16 and moe._core._input_address(arr, False) == t.data_ptr()
    tb = t.to(torch.bfloat16)
    arr, bf16, _ = moe._in(tb, "t")
    assert bf16 and moe._core._input_address(arr, True) == tb.data_ptr()
    r = moe.route(tb, "mixtral")
    want = moe.route(tb.float(), "mixtral")  # bf16 -> f32 is exact
    assert torch.equal(r.indices, want.indices) and torch.equal(r.weights, want.weights)
    nc = torch.randn(8, 24).t()  # non-contiguous
    assert torch.equal(moe.route(nc, "mixtral").indices, moe.route(nc.contiguous(), "mixtral").indices)


def test_outputs_are_views_of_the_routing():
    r = moe.route(moe.synthetic_logits(8, 8), "mixtral")
    w = r.weights
    w[0, 0] = 42.0
    assert r.weights[0, 0] == 42.0
    del r
    assert w[0, 0] == 42.0  # the array keeps the routing alive


# -- errors -----------------------------------------------------------------------------------


def test_errors_carry_the_cpp_id_and_message():
    logits = moe.synthetic_logits(4, 8)
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", top_k=9)
    assert e.value.id == "moe.router.top_k"
    assert str(e.value) == "[moe.router.top_k] k=9 exceeds num_experts=8"
    assert isinstance(e.value, ValueError)
    with pytest.raises(moe.Error) as e:
        moe.route(logits.astype(np.int32), "mixtral")
    assert str(e.value) == "[moe.python.dtype] logits must be float32, float64, float16 or bfloat16, got int32"
    with pytest.raises(moe.Error) as e:
        moe.route(logits[0], "mixtral")
    assert str(e.value) == "[moe.python.shape] logits must be 2-D, got 1-D"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtrall")
    assert e.value.id == "moe.config.preset"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", bias=np.zeros(3, np.float32))
    assert e.value.id == "moe.router.bias"
    with pytest.raises(moe.Error) as e:
        moe.route(logits, "mixtral", threads=-1)
    assert str(e.value) == "[moe.python.threads] threads=-1 must be >= 0 (0 = all cores)"
    with pytest.raises(moe.Error) as e:
        moe.router_config("mixtral", topk=2)  # config dicts reject unknown fields too
    assert str(e.value) == "[moe.python.argument] router: unknown option 'topk'"
    with pytest.raises(TypeError):
        moe.route(logits, "mixtral", topk=2)  # Python's own check of keyword names


def test_help_shows_docstrings():
    assert "top-k" in moe.route.__doc__ and "preset" in moe.route.__doc__
    assert moe.route.__annotations__


def test_groups_of_one_expert_select_expert_0_on_every_variant():
    """Issue 29: with one expert per group and full SIMD tiles, the native and avx2 variants never
    picked expert 0. Megatron-Core gives [0, 1] and [4, 0] here."""
    x = np.tile(np.array([3, 2, 1, 0], np.float32), (16, 1))
    r = moe.route(x, score="softmax", pre_softmax=True, top_k=2, num_groups=4, group_top_k=2,
                  group_score_top_m=1, mask="neg_inf")
    np.testing.assert_array_equal(r.indices, np.tile([0, 1], (16, 1)))
    x = np.tile(np.array([3, 2, 1, 0, 5, -1, 0.5, 2.5], np.float32), (16, 1))
    for groups in (8, 4):
        r = moe.route(x, score="sigmoid", top_k=2, num_groups=groups, group_top_k=4, group_score_top_m=1)
        np.testing.assert_array_equal(r.indices, np.tile([4, 0], (16, 1)))
