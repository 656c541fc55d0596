"""Losses and gradients against the goldens of tests/data/losses (Megatron, HF, DeepSpeed, Tutel
statements), torch statements of HF's load_balancing_loss_func and the z-loss, and
torch.autograd.gradcheck of the moe.torch wrappers; selection policies' goldens."""
import os

import numpy as np
import pytest

import moe
from conftest import cases, data, needs_torch, npy

LOSS_CASES = cases("losses")


def _routing(name, E):
    idx = npy("losses", name + ".indices.npy")
    return moe.routing_from_arrays(idx, np.ones(idx.shape, np.float32), E)


def _mask(name):
    p = data("losses", name + ".mask.npy")
    return np.load(p) if os.path.exists(p) else None


def _check_value(got, kv):
    want = float(kv["value"])
    assert abs(got - want) <= 2e-6 * abs(want), (got, want)


def _check_grad(got, name):
    want = npy("losses", name + ".grad.npy")
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name,words,kv", LOSS_CASES, ids=[c[0] for c in LOSS_CASES])
def test_loss_and_selection_goldens(name, words, kv):
    kind = words[0]
    logits = npy("losses", name + ".logits.npy") if kind != "global" else None
    if kind == "lbl":
        r = _routing(name, logits.shape[1])
        value, grad = moe.load_balancing_loss(logits, r, normalization=kv["variant"], score=kv["score"],
                                              num_null_experts=int(kv["null"]), valid=_mask(name), grad=True)
        _check_value(value, kv)
        _check_grad(grad, name)
        assert moe.load_balancing_loss(logits, r, normalization=kv["variant"], score=kv["score"],
                                       num_null_experts=int(kv["null"]), valid=_mask(name)) == value
        if kv["variant"] == "megatron" and kv["null"] == "0":  # the goldens count Megatron's top-k
            mr = moe.aux_loss_routing(logits, r.top_k, score=kv["score"])
            np.testing.assert_array_equal(mr.indices, r.indices)
    elif kind == "seq":
        value, grad = moe.sequence_load_balancing_loss(logits, _routing(name, logits.shape[1]), seq_len=int(kv["seq_len"]),
                                                       grad=True)
        _check_value(value, kv)
        _check_grad(grad, name)
    elif kind == "global":
        b = moe.GlobalLoadBalancer()
        parts = [f"{name}_{i}" for i in range(int(kv["micro"]))]
        for p in parts:
            lg = npy("losses", p + ".logits.npy")
            b.add(lg, _routing(p, lg.shape[1]))
        _check_value(b.loss(), kv)
        for p in parts:
            _check_grad(b.gradient(npy("losses", p + ".logits.npy")), p)
        # The same loss from terms merged across "ranks".
        b2 = moe.GlobalLoadBalancer()
        for p in parts:
            lg = npy("losses", p + ".logits.npy")
            b2.merge(moe.aux_loss_statistics(lg, _routing(p, lg.shape[1])))
        assert abs(b2.loss() - b.loss()) <= 1e-12 * abs(b.loss())
    elif kind == "z":
        value, grad = moe.z_loss(logits, valid=_mask(name), grad=True)
        _check_value(value, kv)
        _check_grad(grad, name)
    elif kind == "importance":
        value, grad = moe.importance_load_loss(logits, npy("losses", name + ".noisy.npy"), _routing(name, logits.shape[1]),
                                               gate_noise=float(kv["gate_noise"]), grad=True)
        _check_value(value, kv)
        _check_grad(grad, name)
    elif kind == "sinkhorn":
        plan, info = moe.sinkhorn(logits)
        assert info["converged"] and info["iterations"] == int(kv["iterations"])
        np.testing.assert_allclose(plan, npy("losses", name + ".norm.npy"), rtol=1e-12, atol=0)
        r, _ = moe.route_sinkhorn(logits, int(kv["k"]))
        _check_selection(r, name)
    elif kind == "top_p":
        _check_selection(moe.route_top_p(logits, p=float(kv["p"]), min_k=int(kv["min_k"]), max_k=int(kv["max_k"])), name)
    elif kind == "expert_choice":
        _check_selection(moe.route_expert_choice(logits, capacity_factor=float(kv["capacity_factor"])), name)
    else:
        pytest.fail(f"unknown golden kind {kind}")


def _check_selection(r, name):
    np.testing.assert_array_equal(r.indices, npy("losses", name + ".indices.npy"))
    np.testing.assert_allclose(r.weights, npy("losses", name + ".weights.npy"), rtol=4 * 1.1920929e-7, atol=1e-30)


def test_loss_without_routing_needs_top_k():
    with pytest.raises(moe.Error) as e:
        moe.load_balancing_loss(moe.synthetic_logits(8, 4))
    assert e.value.id == "moe.losses.routing"
    with pytest.raises(moe.Error) as e:
        moe.z_loss(moe.synthetic_logits(8, 4).astype(np.float16))
    assert str(e.value) == "[moe.python.dtype] logits must be float32 or float64, got float16"


# -- torch statements -------------------------------------------------------------------------


@needs_torch
def test_hf_mixtral_load_balancing_loss_func():
    import torch
    torch.manual_seed(0)
    T, E, K = 64, 8, 2
    logits = torch.randn(T, E, dtype=torch.float64)
    # transformers' load_balancing_loss_func (no attention mask)
    routing_weights = torch.softmax(logits, dim=-1)
    _, selected = torch.topk(routing_weights, K, dim=-1)
    expert_mask = torch.nn.functional.one_hot(selected, E)
    tokens_per_expert = torch.mean(expert_mask.double(), dim=0)
    router_prob_per_expert = torch.mean(routing_weights, dim=0)
    ref = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0)) * E
    got = moe.load_balancing_loss(logits, top_k=K, normalization="hf_mixtral")
    assert abs(got - ref.item()) <= 1e-12 * ref.item()
    # Megatron's is HF's / k.
    assert abs(moe.load_balancing_loss(logits, top_k=K) - ref.item() / K) <= 1e-12 * ref.item()


@needs_torch
def test_z_loss_statement_and_autograd():
    import torch
    import moe.torch as mt
    torch.manual_seed(1)
    logits = torch.randn(32, 16, dtype=torch.float64, requires_grad=True)
    ref = torch.logsumexp(logits, dim=-1).square().mean() * 0.5
    ref.backward()
    want = logits.grad.clone()
    logits.grad = None
    got = mt.z_loss(logits, coeff=0.5)
    got.backward()
    assert abs(got.item() - ref.item()) <= 1e-12 * ref.item()
    torch.testing.assert_close(logits.grad, want, rtol=1e-12, atol=1e-15)


@needs_torch
@pytest.mark.parametrize("normalization", ["megatron", "hf_mixtral", "deepspeed"])
@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_gradcheck_load_balancing_loss(normalization, score):
    import torch
    import moe.torch as mt
    torch.manual_seed(2)
    logits = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: mt.load_balancing_loss(x, top_k=2, normalization=normalization, score=score), (logits,))


@needs_torch
def test_gradcheck_sequence_and_z_and_masks():
    import torch
    import moe.torch as mt
    torch.manual_seed(3)
    logits = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([1] * 12 + [0] * 4)
    assert torch.autograd.gradcheck(lambda x: mt.sequence_load_balancing_loss(x, seq_len=4, top_k=2), (logits,))
    assert torch.autograd.gradcheck(lambda x: mt.z_loss(x, coeff=1e-3, valid=valid), (logits,))
    assert torch.autograd.gradcheck(lambda x: mt.load_balancing_loss(x, top_k=2, valid=valid), (logits,))
    idx = torch.topk(logits.detach(), 2, dim=-1)[1]
    assert torch.autograd.gradcheck(lambda x: mt.load_balancing_loss(x, indices=idx), (logits,))


@needs_torch
def test_autograd_float32_and_bfloat16_logits():
    import torch
    import moe.torch as mt
    torch.manual_seed(4)
    for dt in (torch.float32, torch.bfloat16):
        logits = torch.randn(16, 8).to(dt).requires_grad_()
        loss = mt.load_balancing_loss(logits, top_k=2) + mt.z_loss(logits, coeff=1e-3)
        assert loss.dtype == dt
        loss.backward()
        assert logits.grad.dtype == dt and torch.isfinite(logits.grad.float()).all()
        assert logits.grad.abs().sum() > 0


def test_update_expert_bias_statement():
    bias = np.zeros(4, np.float32)
    counts = np.array([10, 2, 4, 4])
    out = moe.update_expert_bias(bias, counts, rate=0.5)
    assert out is bias  # float32 arrays are updated in place
    # Megatron get_updated_expert_bias: bias += rate * sign(mean(n) - n)
    np.testing.assert_array_equal(bias, (0.5 * np.sign(counts.mean() - counts)).astype(np.float32))
    np.testing.assert_array_equal(moe.update_expert_bias([1.0, 1.0], [3, 3]), np.float32([1.0, 1.0]))  # balanced: unchanged
    with pytest.raises(moe.Error) as e:
        moe.update_expert_bias(bias, np.array([1, 2]))
    assert str(e.value) == "[moe.losses.bias] bias has 4 entries, tokens_per_expert 2"
