#!/usr/bin/env python3
"""Golden cases for moe's losses and selection policies, from torch statements of each peer:
  * load balancing: Megatron-Core switch_load_balancing_loss_func (+ compute_routing_scores_for_aux_loss:
    softmax, or sigmoid / (sum + 1e-20), or sqrt(softplus) / (sum + 1e-20)), sequence-level (per sequence, averaged), global batch
    (counts and P summed over micro-batches), HF Mixtral load_balancing_loss_func (with attention mask),
    DeepSpeed top2gating (first-choice counts), AdaMoE null experts (null counts replaced by their mean)
  * ST-MoE / Megatron z-loss, Tutel load_importance_loss
  * Megatron sinkhorn routing, top-p dynamic routing, expert-choice routing
Values and gradients are torch.autograd in float64 on the float32 logits (the exact values that a
float32 implementation approximates). Selections use stable sorts (ties -> lower index).

Writes tests/data/losses/<case>.*.npy and cases.txt. Run with Debian's python3-torch/numpy:
    python3 tests/gen_losses_golden.py
"""
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "losses")
torch.manual_seed(20261123)
lines = []


def save(name, **arrays):
    for key, a in arrays.items():
        np.save(os.path.join(OUT, f"{name}.{key}.npy"), a)


def rand_logits(t, e, scale=2.0):
    return (torch.randn(t, e) * scale).to(torch.float32)


def topk_idx(x, k):
    return torch.sort(x, dim=-1, descending=True, stable=True)[1][:, :k]


def probs_for_loss(l, score):
    if score == "softmax":
        return torch.softmax(l, dim=-1)
    s = torch.sigmoid(l) if score == "sigmoid" else torch.nn.functional.softplus(l).sqrt()
    return s / (s.sum(dim=-1, keepdim=True) + 1e-20)


def switch_terms(l, idx, score, variant, mask):
    """(P sums, counts, valid tokens) of one batch, float64 autograd-ready."""
    t, e = l.shape
    p = probs_for_loss(l, score)
    m = torch.ones(t, dtype=torch.float64) if mask is None else mask.to(torch.float64)
    psum = (p * m[:, None]).sum(0)
    cols = idx[:, :1] if variant == "deepspeed" else idx
    onehot = torch.zeros(t, e, dtype=torch.float64)
    for s in range(cols.shape[1]):
        onehot += torch.nn.functional.one_hot(cols[:, s].clamp(min=0), e).to(torch.float64) * (cols[:, s] >= 0)[:, None]
    counts = (onehot * m[:, None]).sum(0)
    return psum, counts, m.sum()


def switch_value(psum, counts, tokens, e, k, variant, null):
    if null:
        counts = counts.clone()
        counts[e - null:] = counts[e - null:].mean()
    kn = k if variant == "megatron" else 1
    return e / (kn * tokens * tokens) * (psum * counts).sum()


def case_lbl(name, t, e, k, score, variant, masked=False, null=0):
    l32 = rand_logits(t, e)
    l = l32.to(torch.float64).requires_grad_(True)
    with torch.no_grad():
        idx = topk_idx(probs_for_loss(l32, score), k)
    mask = (torch.rand(t) > 0.25).to(torch.int32) if masked else None
    psum, counts, tokens = switch_terms(l, idx, score, variant, mask)
    v = switch_value(psum, counts, tokens, e, k, variant, null)
    if variant == "hf_mixtral":  # the HF statement, as a cross-check of the generic form
        with torch.no_grad():
            rw = torch.softmax(l, dim=-1)
            em = torch.nn.functional.one_hot(idx, e).to(torch.float64)
            if mask is None:
                tpe, rpe = em.mean(0), rw.mean(0)
            else:
                mm = mask.to(torch.float64)
                tpe = (em * mm[:, None, None]).sum(0) / mm.sum()
                rpe = (rw * mm[:, None]).sum(0) / mm.sum()
            hf = (tpe * rpe[None, :]).sum() * e
            assert abs(hf.item() - v.item()) < 1e-12 * max(1.0, abs(v.item()))
    v.backward()
    arrays = dict(logits=l32.numpy(), indices=idx.to(torch.int32).numpy(), grad=l.grad.numpy())
    if mask is not None:
        arrays["mask"] = mask.numpy()
    save(name, **arrays)
    lines.append(f"{name} lbl variant={variant} score={score} k={k} null={null} value={v.item():.17g}")


def case_seq(name, b, s, e, k):
    l32 = rand_logits(b * s, e)
    l = l32.to(torch.float64).requires_grad_(True)
    with torch.no_grad():
        idx = topk_idx(torch.softmax(l32, -1), k)
    total = 0
    for i in range(b):
        psum, counts, tokens = switch_terms(l[i * s:(i + 1) * s], idx[i * s:(i + 1) * s], "softmax", "megatron", None)
        total = total + switch_value(psum, counts, tokens, e, k, "megatron", 0)
    v = total / b
    v.backward()
    save(name, logits=l32.numpy(), indices=idx.to(torch.int32).numpy(), grad=l.grad.numpy())
    lines.append(f"{name} seq seq_len={s} k={k} value={v.item():.17g}")


def case_global(name, micro, t, e, k):
    ls32 = [rand_logits(t, e) for _ in range(micro)]
    ls = [x.to(torch.float64).requires_grad_(True) for x in ls32]
    idxs = [topk_idx(torch.softmax(x, -1), k) for x in ls32]
    psum = counts = tokens = 0
    for l, idx in zip(ls, idxs):
        p, c, n = switch_terms(l, idx, "softmax", "megatron", None)
        psum, counts, tokens = psum + p, counts + c, tokens + n
    v = switch_value(psum, counts, tokens, e, k, "megatron", 0)
    v.backward()
    for i in range(micro):
        save(f"{name}_{i}", logits=ls32[i].numpy(), indices=idxs[i].to(torch.int32).numpy(), grad=ls[i].grad.numpy())
    lines.append(f"{name} global micro={micro} k={k} value={v.item():.17g}")


def case_z(name, t, e, masked):
    l32 = rand_logits(t, e, 4.0)
    l32[1, 2] = float("-inf")
    l = l32.to(torch.float64).requires_grad_(True)
    z = torch.logsumexp(l, dim=-1) ** 2
    mask = (torch.rand(t) > 0.3).to(torch.int32) if masked else None
    if mask is None:
        v = z.mean()
    else:
        mm = mask.to(torch.float64)
        v = (z * mm).sum() / mm.sum().clamp(min=1.0)
    v.backward()
    g = torch.nan_to_num(l.grad, nan=0.0)
    arrays = dict(logits=l32.numpy(), grad=g.numpy())
    if mask is not None:
        arrays["mask"] = mask.numpy()
    save(name, **arrays)
    lines.append(f"{name} z value={v.item():.17g}")


def case_importance(name, t, e, k, gate_noise):
    l32 = rand_logits(t, e)
    noisy32 = (l32 + gate_noise * torch.randn(t, e) / e).to(torch.float32)
    idx = topk_idx(torch.softmax(noisy32, -1), k)
    l = l32.to(torch.float64).requires_grad_(True)
    noisy = l + (noisy32.to(torch.float64) - l32.to(torch.float64))  # noise is a constant offset
    scores = torch.softmax(l, dim=-1)
    imp = scores.sum(0)
    l_imp = imp.var() / (imp.mean() ** 2 + 1e-10)
    normal = torch.distributions.normal.Normal(torch.tensor([0.0], dtype=torch.float64),
                                               torch.tensor([gate_noise / e], dtype=torch.float64))
    thr = noisy.gather(1, idx)[:, -1].view(-1, 1)
    load = normal.cdf(scores - thr).sum(0)
    l_load = load.var() / (load.mean() ** 2 + 1e-10)
    v = (l_imp + l_load) / 2
    v.backward()
    save(name, logits=l32.numpy(), noisy=noisy32.numpy(), indices=idx.to(torch.int32).numpy(), grad=l.grad.numpy())
    lines.append(f"{name} importance k={k} gate_noise={gate_noise} value={v.item():.17g}")


def case_sinkhorn(name, t, e, k):
    l32 = rand_logits(t, e)
    cost = torch.exp(l32.to(torch.float64))
    d0, d1 = torch.ones(t, dtype=torch.float64), torch.ones(e, dtype=torch.float64)
    err, it = 1e9, 0
    d1_old = d1
    while err > 1e-4:
        d0 = (1 / t) * 1 / (torch.sum(d1 * cost, 1) + 1e-8)
        d1 = (1 / e) * 1 / (torch.sum(d0.unsqueeze(1) * cost, 0) + 1e-8)
        err = torch.mean(torch.abs(d1_old - d1)).item()
        d1_old = d1
        it += 1
    norm = d1 * cost * d0.unsqueeze(1)
    idx = topk_idx(norm, k)
    act = torch.sigmoid(l32) if k == 1 else torch.softmax(l32, dim=-1)
    w = act.gather(1, idx)
    save(name, logits=l32.numpy(), norm=norm.numpy(), indices=idx.to(torch.int32).numpy(), weights=w.numpy())
    lines.append(f"{name} sinkhorn k={k} iterations={it}")


def case_top_p(name, t, e, p, min_k, max_k):
    l32 = rand_logits(t, e)
    probs = torch.softmax(l32, dim=-1)
    sp, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    cum = torch.cumsum(sp, dim=-1)
    # the fewest leading experts whose sum reaches p: n = 1 + #(prefix sums < p)
    n = ((cum < p).sum(-1) + 1).clamp(min=min_k, max=max_k)
    idx = torch.full((t, max_k), -1, dtype=torch.int32)
    w = torch.zeros(t, max_k, dtype=torch.float32)
    for i in range(t):
        idx[i, :n[i]] = order[i, :n[i]].to(torch.int32)
        w[i, :n[i]] = sp[i, :n[i]]
    save(name, logits=l32.numpy(), indices=idx.numpy(), weights=w.numpy())
    lines.append(f"{name} top_p p={p} min_k={min_k} max_k={max_k}")


def case_expert_choice(name, t, e, cf):
    l32 = rand_logits(t, e)
    s = torch.softmax(l32, dim=-1)
    cap = min(t, int(np.ceil(t * cf / e)))
    chosen = torch.zeros(t, e, dtype=torch.bool)
    for j in range(e):
        top = torch.sort(s[:, j], descending=True, stable=True)[1][:cap]
        chosen[top, j] = True
    kmax = max(1, int(chosen.sum(1).max()))
    idx = torch.full((t, kmax), -1, dtype=torch.int32)
    w = torch.zeros(t, kmax, dtype=torch.float32)
    for i in range(t):
        ex = [j for j in torch.sort(s[i], descending=True, stable=True)[1].tolist() if chosen[i, j]]
        idx[i, :len(ex)] = torch.tensor(ex, dtype=torch.int32)
        w[i, :len(ex)] = s[i, ex]
    save(name, logits=l32.numpy(), indices=idx.numpy(), weights=w.numpy())
    lines.append(f"{name} expert_choice capacity_factor={cf} capacity={cap}")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    case_lbl("lbl_megatron_softmax", 64, 8, 2, "softmax", "megatron")
    case_lbl("lbl_megatron_sigmoid", 48, 16, 4, "sigmoid", "megatron")
    case_lbl("lbl_megatron_masked", 40, 8, 2, "softmax", "megatron", masked=True)
    case_lbl("lbl_hf_mixtral", 64, 8, 2, "softmax", "hf_mixtral")
    case_lbl("lbl_hf_mixtral_masked", 40, 8, 2, "softmax", "hf_mixtral", masked=True)
    case_lbl("lbl_deepspeed_top2", 50, 8, 2, "softmax", "deepspeed")
    case_lbl("lbl_deepspeed_top1", 50, 8, 1, "softmax", "deepspeed")
    case_lbl("lbl_null_experts", 60, 12, 2, "softmax", "megatron", null=4)
    case_seq("seq_megatron", 4, 16, 8, 2)
    case_global("global_megatron", 3, 32, 8, 2)
    case_z("z_loss", 33, 8, False)
    case_z("z_loss_masked", 33, 8, True)
    case_importance("importance_load", 40, 8, 2, 1.0)
    case_importance("importance_load_top1", 40, 6, 1, 0.5)
    case_sinkhorn("sinkhorn_k2", 64, 8, 2)
    case_sinkhorn("sinkhorn_k1", 48, 4, 1)
    case_top_p("top_p_0.6", 64, 16, 0.6, 1, 16)
    case_top_p("top_p_0.9_capped", 64, 16, 0.9, 2, 4)
    case_expert_choice("expert_choice_cf2", 32, 8, 2.0)
    case_expert_choice("expert_choice_cf1", 30, 4, 1.0)
    # Appended last so that the cases above keep their random draws.
    case_lbl("lbl_megatron_sqrtsoftplus", 48, 16, 4, "sqrtsoftplus", "megatron")
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("# name kind key=value... (written by tests/gen_losses_golden.py)\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
