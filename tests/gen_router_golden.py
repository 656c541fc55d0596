#!/usr/bin/env python3
"""Golden routing cases for moe's router, from independent torch transcriptions of each peer.

Each function below restates one system's routing in torch, following its source:
  * HF transformers MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock, DeepseekV3TopkRouter
  * Megatron-Core moe_utils.topk_routing_with_score_function / group_limited_topk
  * vLLM fused_moe grouped_topk
  * llama.cpp build_moe_ffn weight normalisation (sum clamped at 2^-14)
  * Switch Transformer top-1
  * HF Qwen3MoeSparseMoeBlock, OlmoeSparseMoeBlock, DbrxRouter, GraniteMoeTopKGating,
    GptOssTopKRouter, Llama4Router, DeepSeek-V2 MoEGate (modeling_deepseek.py),
    MiniMaxM2SparseMoeBlock; Kimi-K2 and GLM-4.5 through the DeepSeek-V3 router
One deliberate change: torch.topk leaves the order of equal values unspecified, so every
top-k here is a stable descending sort (ties -> lower index), the rule moe guarantees.

Writes tests/data/router/<case>.{logits,bias,indices,weights}.npy and cases.txt.
Run with Debian's python3-torch and python3-numpy:  python3 tests/gen_router_golden.py
"""
import math
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "router")
NEG_INF = float("-inf")


def topk(x, k):
    vals, idx = torch.sort(x, dim=-1, descending=True, stable=True)
    return vals[..., :k], idx[..., :k]


# ---- peers -----------------------------------------------------------------------------

def hf_mixtral(logits, k):
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    w = w / w.sum(dim=-1, keepdim=True)
    return idx, w


def hf_qwen2_moe(logits, k, norm_topk_prob):
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    if norm_topk_prob:
        w = w / w.sum(dim=-1, keepdim=True)
    return idx, w


def switch(logits):
    p = torch.softmax(logits, dim=-1, dtype=torch.float)
    w, idx = topk(p, 1)
    return idx, w


def hf_deepseek_v3(logits, bias, k, n_group, topk_group, scale, norm_topk_prob):
    n, e = logits.shape
    scores = logits.float().sigmoid()
    choice = scores + bias.unsqueeze(0)
    group_scores = topk(choice.view(n, n_group, e // n_group), 2)[0].sum(dim=-1)
    group_idx = topk(group_scores, topk_group)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(n, n_group, e // n_group).reshape(n, e)
    choice = choice.masked_fill(~score_mask.bool(), 0.0)
    idx = topk(choice, k)[1]
    w = scores.gather(1, idx)
    if norm_topk_prob:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return idx, w * scale


def megatron_group_limited_topk(scores, k, num_groups, group_topk):
    n, e = scores.shape
    group_scores = topk(scores.view(n, num_groups, -1), k // group_topk)[0].sum(dim=-1)
    group_idx = topk(group_scores, group_topk)[1]
    group_mask = torch.zeros_like(group_scores).scatter(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(n, num_groups, e // num_groups).reshape(n, -1)
    return topk(scores.masked_fill(~score_mask.bool(), NEG_INF), k)


def megatron(logits, k, pre_softmax, num_groups, group_topk, scaling, score_fn, bias):
    def compute_topk(s):
        if group_topk:
            return megatron_group_limited_topk(s, k, num_groups, group_topk)
        return topk(s, k)

    if score_fn == "softmax":
        if pre_softmax:
            scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
            probs, idx = compute_topk(scores)
        else:
            scores, idx = compute_topk(logits)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    else:
        if score_fn == "sigmoid":
            scores = torch.sigmoid(logits.float())
        else:
            scores = torch.nn.functional.softplus(logits.float()).sqrt()
        if bias is not None:
            _, idx = compute_topk(scores + bias.float())
            scores = torch.gather(scores, dim=1, index=idx)
        else:
            scores, idx = compute_topk(scores)
        probs = scores / (scores.sum(dim=-1, keepdim=True) + 1e-20) if k > 1 else scores
    if scaling:
        probs = probs * scaling
    return idx, probs


def vllm_grouped_topk(logits, k, renormalize, num_expert_group, topk_group, scoring, bias, scale):
    scores = torch.softmax(logits, dim=-1) if scoring == "softmax" else logits.sigmoid()
    n = scores.shape[0]
    if bias is not None:
        original = scores
        scores = scores + bias.unsqueeze(0)
        group_scores = topk(scores.view(n, num_expert_group, -1), 2)[0].sum(dim=-1)
    else:
        group_scores = scores.view(n, num_expert_group, -1).max(dim=-1).values
    group_idx = topk(group_scores, topk_group)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(n, num_expert_group, scores.shape[-1] // num_expert_group).reshape(n, -1)
    tmp = scores.masked_fill(~score_mask.bool(), float("-inf"))
    if bias is not None:
        idx = topk(tmp, k)[1]
        w = original.gather(1, idx)
    else:
        w, idx = topk(tmp, k)
    if renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    return idx, w * scale


def hf_dbrx(logits, k, p):
    w = logits.softmax(dim=-1, dtype=torch.float32)
    w, idx = topk(w, k)
    if p:
        w = w / torch.norm(w, p=p, dim=-1, keepdim=True)
    return idx, w


def hf_granite_moe(logits, k):
    # GraniteMoeTopKGating (and GptOssTopKRouter, whose bias is the gate linear's)
    top, idx = topk(logits.float(), k)
    return idx, torch.softmax(top, dim=1)


def hf_llama4(logits, k):
    top, idx = topk(logits, k)
    scores = torch.full_like(logits, NEG_INF).scatter_(1, idx, top)
    scores = torch.sigmoid(scores.float())
    return idx, scores.gather(1, idx)


def hf_deepseek_v2(logits, k, n_group, topk_group, scale, norm_topk_prob):
    n, e = logits.shape
    scores = logits.softmax(dim=-1, dtype=torch.float32)
    if n_group > 1:  # group_limited_greedy
        group_scores = scores.view(n, n_group, -1).max(dim=-1).values
        group_idx = topk(group_scores, topk_group)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(n, n_group, e // n_group).reshape(n, -1)
        scores = scores.masked_fill(~score_mask.bool(), 0.0)
    w, idx = topk(scores, k)
    if k > 1 and norm_topk_prob:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    else:
        w = w * scale
    return idx, w


def hf_minimax_m2(logits, bias, k):
    w = torch.sigmoid(logits.float())
    choice = w + bias if bias is not None else w
    idx = topk(choice, k)[1]
    tw = w.gather(1, idx)
    return idx, tw / tw.sum(dim=-1, keepdim=True)


def deepseek_v4_gate(logits, bias, k, route_scale):
    """DeepSeek-V4 inference/model.py Gate.forward (score_func sqrtsoftplus, no hash table)."""
    scores = torch.nn.functional.softplus(logits.float()).sqrt()
    choice = scores + bias if bias is not None else scores
    idx = topk(choice, k)[1]
    w = scores.gather(1, idx)
    return idx, w / w.sum(dim=-1, keepdim=True) * route_scale


def llama_cpp_norm(idx_w):
    idx, w = idx_w
    return idx, w / torch.clamp(w.sum(dim=-1, keepdim=True), min=6.103515625e-5)


# ---- inputs ----------------------------------------------------------------------------

def make_logits(kind, t, e, gen):
    if kind == "rand":
        return torch.randn(t, e, generator=gen) * 2.0
    if kind == "ties":
        return torch.randint(-1, 2, (t, e), generator=gen).float()
    if kind == "large":
        x = torch.randn(t, e, generator=gen) * 40.0
        x[0] = torch.tensor([100.0 if i == 0 else -50.0 - (i % 3) for i in range(e)])
        return x
    if kind == "neginf":
        x = torch.randn(t, e, generator=gen) * 2.0
        mask = torch.rand(t, e, generator=gen) < 0.25
        mask[:, 0] = False
        return x.masked_fill(mask, NEG_INF)
    if kind == "bf16":
        return (torch.randn(t, e, generator=gen) * 2.0).to(torch.bfloat16).float()
    if kind == "deep":  # around sigmoid's float32 underflow (torch: exactly 0 below -88.7228)
        return -88.7 + torch.randn(t, e, generator=gen) * 1.5
    if kind == "sat":  # sigmoid saturates to 1.0 in float32 for every logit above ~17
        return 17.0 + torch.rand(t, e, generator=gen) * 30.0
    raise ValueError(kind)


# name, E, k, data kinds, preset spec (parsed by tests/test_router_golden.cpp), config, bias scale, reference
CASES = []


def case(name, e, k, kinds, preset, cfg, ref, bias_scale=0.0, tokens=40):
    CASES.append((name, e, k, kinds, preset, cfg, ref, bias_scale, tokens))


def cfg(score="softmax", pre=1, renorm="none", eps=0.0, scale=1.0, groups=0, gtk=0, topm=2, mask="neg_inf", sol=0,
        wfm=0):
    return dict(score=score, pre=pre, renorm=renorm, eps=eps, scale=scale, groups=groups, gtk=gtk, topm=topm, mask=mask,
                sol=sol, wfm=wfm)


ALL = ["rand", "ties", "large", "neginf", "bf16"]
case("mixtral", 8, 2, ALL, "mixtral,2", cfg(renorm="sum"), lambda l, b: hf_mixtral(l, 2))
case("qwen2_moe_60x4", 60, 4, ALL, "qwen2_moe,4,0", cfg(), lambda l, b: hf_qwen2_moe(l, 4, False))
case("qwen2_moe_64x8_norm", 64, 8, ALL, "qwen2_moe,8,1", cfg(renorm="sum"), lambda l, b: hf_qwen2_moe(l, 8, True))
case("switch", 16, 1, ALL, "switch", cfg(), lambda l, b: switch(l))
case("deepseek_v3_64", 64, 8, ["rand", "ties", "large", "bf16"], "deepseek_v3,8,8,4,2.5,1",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=2.5, groups=8, gtk=4, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 8, 8, 4, 2.5, True), bias_scale=0.5)
case("deepseek_v3_256", 256, 8, ["rand", "bf16"], "deepseek_v3,8,8,4,2.5,1",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=2.5, groups=8, gtk=4, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 8, 8, 4, 2.5, True), bias_scale=0.05, tokens=16)
case("deepseek_v3_nonorm", 32, 4, ["rand"], "deepseek_v3,4,4,2,1.5,0",
     cfg(score="sigmoid", renorm="none", scale=1.5, groups=4, gtk=2, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 4, 4, 2, 1.5, False), bias_scale=0.8)
case("megatron_post_softmax", 8, 2, ALL, "megatron,2,softmax,0,0,0,0", cfg(pre=0),
     lambda l, b: megatron(l, 2, False, None, None, None, "softmax", None))
case("megatron_pre_softmax", 32, 4, ALL, "megatron,4,softmax,1,0,0,0", cfg(),
     lambda l, b: megatron(l, 4, True, None, None, None, "softmax", None))
case("megatron_pre_softmax_scaled", 16, 2, ["rand"], "megatron,2,softmax,1,0,0,2", cfg(scale=2.0),
     lambda l, b: megatron(l, 2, True, None, None, 2.0, "softmax", None))
case("megatron_post_softmax_groups", 64, 6, ["rand", "ties", "neginf"], "megatron,6,softmax,0,8,3,0",
     cfg(pre=0, groups=8, gtk=3, topm=2),
     lambda l, b: megatron(l, 6, False, 8, 3, None, "softmax", None))
case("megatron_pre_softmax_groups", 64, 8, ["rand", "large"], "megatron,8,softmax,1,8,4,0",
     cfg(groups=8, gtk=4, topm=2),
     lambda l, b: megatron(l, 8, True, 8, 4, None, "softmax", None))
case("megatron_sigmoid_dsv3", 64, 8, ["rand", "ties", "large", "neginf", "bf16"], "megatron,8,sigmoid,0,8,4,2.5",
     cfg(score="sigmoid", pre=0, renorm="sum_eps", eps=1e-20, scale=2.5, groups=8, gtk=4, topm=2),
     lambda l, b: megatron(l, 8, False, 8, 4, 2.5, "sigmoid", b), bias_scale=0.5)
case("megatron_sigmoid_top1", 16, 1, ["rand", "large"], "megatron,1,sigmoid,0,0,0,0", cfg(score="sigmoid", pre=0),
     lambda l, b: megatron(l, 1, False, None, None, None, "sigmoid", b), bias_scale=0.3)
case("megatron_sqrtsoftplus", 32, 4, ["rand", "ties", "large", "neginf", "bf16"], "megatron,4,sqrtsoftplus,0,0,0,0",
     cfg(score="sqrtsoftplus", pre=0, renorm="sum_eps", eps=1e-20),
     lambda l, b: megatron(l, 4, False, None, None, None, "sqrtsoftplus", b), bias_scale=0.3)
case("megatron_sqrtsoftplus_groups", 48, 4, ["rand"], "megatron,4,sqrtsoftplus,0,4,2,3",
     cfg(score="sqrtsoftplus", pre=0, renorm="sum_eps", eps=1e-20, scale=3.0, groups=4, gtk=2, topm=2),
     lambda l, b: megatron(l, 4, False, 4, 2, 3.0, "sqrtsoftplus", None))
case("vllm_softmax_groups", 64, 6, ["rand", "ties"], "vllm,6,8,3,1,softmax,0,1",
     cfg(renorm="sum", groups=8, gtk=3, topm=1),
     lambda l, b: vllm_grouped_topk(l, 6, True, 8, 3, "softmax", None, 1.0))
case("vllm_sigmoid_bias", 64, 8, ["rand", "large"], "vllm,8,8,4,1,sigmoid,1,2.5",
     cfg(score="sigmoid", renorm="sum", scale=2.5, groups=8, gtk=4, topm=2),
     lambda l, b: vllm_grouped_topk(l, 8, True, 8, 4, "sigmoid", b, 2.5), bias_scale=0.5)
case("llama_cpp_mixtral", 8, 2, ["rand", "large"], "llama_cpp,mixtral,2", cfg(renorm="clamp", eps=6.103515625e-5),
     lambda l, b: llama_cpp_norm(hf_mixtral(l, 2)))
case("llama_cpp_sigmoid", 16, 4, ["rand", "large"], "llama_cpp,megatron,4,sigmoid,0,0,0,0",
     cfg(score="sigmoid", pre=0, renorm="clamp", eps=6.103515625e-5),
     lambda l, b: llama_cpp_norm(megatron(l, 4, False, None, None, None, "sigmoid", None)))

# Today's model families (issue 13's recipe table).
case("qwen3_moe", 32, 8, ALL, "qwen3_moe,8,1", cfg(renorm="sum"), lambda l, b: hf_qwen2_moe(l, 8, True))
case("olmoe", 64, 8, ["rand", "ties", "bf16"], "olmoe,8", cfg(), lambda l, b: hf_qwen2_moe(l, 8, False))
case("dbrx", 16, 4, ALL, "dbrx,4,1", cfg(renorm="sum"), lambda l, b: hf_dbrx(l, 4, 1))
case("granite_moe", 40, 8, ALL, "granite_moe,8", cfg(pre=0), lambda l, b: hf_granite_moe(l, 8))
case("gpt_oss", 32, 4, ALL, "gpt_oss,4", cfg(pre=0), lambda l, b: hf_granite_moe(l, 4))
case("llama4", 16, 1, ["rand", "ties", "large", "bf16"], "llama4,1", cfg(score="sigmoid", sol=1), lambda l, b: hf_llama4(l, 1))
case("llama4_saturated", 16, 1, ["sat"], "llama4,1", cfg(score="sigmoid", sol=1), lambda l, b: hf_llama4(l, 1))
case("deepseek_v2", 64, 6, ["rand", "ties", "large", "bf16"], "deepseek_v2,6,8,3,16,0",
     cfg(groups=8, gtk=3, topm=1, mask="zero", scale=16.0, wfm=1), lambda l, b: hf_deepseek_v2(l, 6, 8, 3, 16.0, False))
case("deepseek_v2_lite", 64, 6, ["rand", "ties"], "deepseek_v2,6,1,1,1,0", cfg(),
     lambda l, b: hf_deepseek_v2(l, 6, 1, 1, 1.0, False))
case("deepseek_v2_norm", 32, 4, ["rand"], "deepseek_v2,4,4,2,16,1",
     cfg(groups=4, gtk=2, topm=1, mask="zero", renorm="sum_eps", eps=1e-20, wfm=1),
     lambda l, b: hf_deepseek_v2(l, 4, 4, 2, 16.0, True))
case("kimi_k2", 64, 8, ["rand", "ties", "bf16"], "kimi_k2,8,2.827",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=2.827, groups=1, gtk=1, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 8, 1, 1, 2.827, True), bias_scale=0.5)
case("glm4_moe", 32, 8, ["rand", "large"], "glm4_moe,8,2.5",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=2.5, groups=1, gtk=1, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 8, 1, 1, 2.5, True), bias_scale=0.5)
case("minimax_m2", 32, 8, ["rand", "ties", "large", "bf16"], "minimax_m2,8", cfg(score="sigmoid", renorm="sum"),
     lambda l, b: hf_minimax_m2(l, b, 8), bias_scale=0.5)

# Parity with the peers' own code where k outruns the groups (issue 13, item 5).
case("deepseek_v3_k_past_groups", 16, 6, ["rand", "ties"], "deepseek_v3,6,4,2,1,1",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=1.0, groups=4, gtk=2, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 6, 4, 2, 1.0, True), bias_scale=0.5)
case("megatron_k_below_group_topk", 32, 2, ["rand", "ties"], "megatron,2,softmax,0,8,4,0", cfg(pre=0, groups=8, gtk=4, topm=0),
     lambda l, b: megatron(l, 2, False, 8, 4, None, "softmax", None))

case("deepseek_v3_deep", 64, 8, ["deep"], "deepseek_v3,8,8,4,2.5,1",
     cfg(score="sigmoid", renorm="sum_eps", eps=1e-20, scale=2.5, groups=8, gtk=4, topm=2, mask="zero"),
     lambda l, b: hf_deepseek_v3(l, b, 8, 8, 4, 2.5, True), bias_scale=1e-38)

case("deepseek_v2_k_past_groups", 16, 6, ["rand"], "deepseek_v2,6,4,2,16,0",
     cfg(groups=4, gtk=2, topm=1, mask="zero", scale=16.0, wfm=1), lambda l, b: hf_deepseek_v2(l, 6, 4, 2, 16.0, False))

# Last, so the cases above keep their random draws.
case("deepseek_v4", 64, 6, ["rand", "ties", "large", "neginf", "bf16"], "deepseek_v4,6,1.5",
     cfg(score="sqrtsoftplus", renorm="sum", scale=1.5), lambda l, b: deepseek_v4_gate(l, b, 6, 1.5), bias_scale=0.3)


def save(path, arr):
    np.save(path, np.ascontiguousarray(arr))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".npy") or f == "cases.txt":
            os.remove(os.path.join(OUT, f))
    gen = torch.Generator().manual_seed(20261122)
    lines = ["# name dtype preset key=value... (generated by tests/gen_router_golden.py; do not edit)"]
    for name, e, k, kinds, preset, c, ref, bias_scale, tokens in CASES:
        for kind in kinds:
            cname = f"{name}.{kind}"
            logits = make_logits(kind, tokens, e, gen)
            bias = (torch.randn(e, generator=gen) * bias_scale) if bias_scale else None
            with torch.no_grad():
                idx, w = ref(logits.clone(), bias)
            save(os.path.join(OUT, cname + ".logits.npy"), logits.numpy().astype(np.float32))
            if bias is not None:
                save(os.path.join(OUT, cname + ".bias.npy"), bias.numpy().astype(np.float32))
            save(os.path.join(OUT, cname + ".indices.npy"), idx.numpy().astype(np.int32))
            save(os.path.join(OUT, cname + ".weights.npy"), w.float().numpy().astype(np.float32))
            dtype = "bf16" if kind == "bf16" else "f32"
            kv = " ".join(f"{key}={val!r}" if isinstance(val, float) else f"{key}={val}" for key, val in c.items())
            lines.append(f"{cname} {dtype} {preset} k={k} bias={int(bias is not None)} {kv}")
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} cases to {OUT}")


if __name__ == "__main__":
    main()
