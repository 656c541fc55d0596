#!/usr/bin/env python3
"""Tiny Hugging Face checkpoints of each MoE family, with torch goldens of the block's forward.

Each family's block is restated in torch from its HF modelling file (transformers, models/<f>/
modeling_<f>.py; DeepSeek-V2 from its Hub modeling_deepseek.py): router, selection, weights,
experts, shared expert. As in tests/gen_router_golden.py, top-k is a stable descending sort
(ties -> lower index), the rule moe guarantees where torch.topk leaves ties unspecified.

Per family a folder tests/data/models/<name>/ with config.json, model.safetensors (two layers;
layer 1 is the one tested, layer 0 holds other weights, or a dense MLP where the family has
dense first layers), x.npy (T x H float32), and the goldens of layer 1: y.npy (T x H),
logits.npy (T x E, router logits with the router bias), indices.npy (T x k int32).
Variants store weights as BF16, FP8 E4M3 with weight_scale_inv (DeepSeek-V3) and MXFP4
_blocks / _scales (GPT-OSS): the goldens use the dequantized values.
Run with Debian's python3-torch and python3-numpy:  python3 tests/gen_models_golden.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_io_golden import e4m3_value, write_safetensors  # noqa: E402
from gen_router_golden import hf_deepseek_v2, hf_deepseek_v3, topk  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "models")
T, H, F_, E = 12, 32, 16, 8
gen = torch.Generator().manual_seed(20261202)


def rnd(*shape, s=0.2):
    return torch.randn(*shape, generator=gen) * s


def swiglu_mlp(x, w1, w3, w2):
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def routed(x, idx, w, experts, weight_on_input=False):
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for s in range(idx.shape[1]):
            e = int(idx[t, s])
            if weight_on_input:
                y[t] += experts(e, x[t:t + 1] * w[t, s])[0]
            else:
                y[t] += w[t, s] * experts(e, x[t:t + 1])[0]
    return y


class Ckpt:
    def __init__(self, name, config):
        self.dir = os.path.join(OUT, name)
        self.config = config
        self.tensors = []

    def add(self, name, t, dtype="F32"):
        if dtype == "F32":
            raw = t.float().contiguous().numpy().astype("<f4").tobytes()
        elif dtype == "BF16":
            raw = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        elif dtype in ("U8", "F8_E4M3"):
            raw = np.ascontiguousarray(t.numpy().astype(np.uint8)).tobytes()
        else:
            raise ValueError(dtype)
        self.tensors.append((name, dtype, list(t.shape), raw))

    def save(self, x, y, logits, idx):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(self.config, f, indent=1)
        write_safetensors(os.path.join(self.dir, "model.safetensors"), self.tensors, {"format": "pt"})
        np.save(os.path.join(self.dir, "x.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(self.dir, "y.npy"), y.detach().numpy().astype(np.float32))
        np.save(os.path.join(self.dir, "logits.npy"), logits.detach().numpy().astype(np.float32))
        np.save(os.path.join(self.dir, "indices.npy"), idx.numpy().astype(np.int32))


def bf16(t):
    return t.to(torch.bfloat16).float()


def experts_per_module(ck, prefix, names, dtype="F32"):
    """E experts as modules <prefix>.{e}.<name>.weight; returns (w1, w3, w2) as stored values."""
    g, u, d = names
    ws = []
    for e in range(E):
        w1, w3, w2 = rnd(F_, H), rnd(F_, H), rnd(H, F_)
        if dtype == "BF16":
            w1, w3, w2 = bf16(w1), bf16(w3), bf16(w2)
        ck.add(f"{prefix}.{e}.{g}.weight", w1, dtype)
        ck.add(f"{prefix}.{e}.{u}.weight", w3, dtype)
        ck.add(f"{prefix}.{e}.{d}.weight", w2, dtype)
        ws.append((w1, w3, w2))
    return ws


def fp8_weight(ck, name, rows, cols):
    """An FP8 E4M3 weight with its 128 x 128 weight_scale_inv; returns the dequantized values."""
    codes = torch.randint(0, 256, (rows, cols), generator=gen)
    codes[(codes & 0x7F) == 0x7F] = 0x38  # no NaN codes
    lut = torch.tensor([e4m3_value(c) for c in range(256)], dtype=torch.float32)
    tiles = ((rows + 127) // 128, (cols + 127) // 128)
    scale = torch.rand(*tiles, generator=gen) * 0.02 + 0.005
    ck.add(name, codes, "F8_E4M3")
    ck.add(name + "_scale_inv", scale)
    s = scale.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
    return lut[codes] * s


def mxfp4_weight(ck, name, e, rows, cols):
    """GPT-OSS MXFP4: [e, rows, cols/32, 16] blocks, [e, rows, cols/32] scales; returns [e, rows, cols]."""
    codes = torch.randint(0, 16, (e, rows, cols), generator=gen)
    scales = torch.randint(120, 128, (e, rows, cols // 32), generator=gen)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).reshape(e, rows, cols // 32, 16)
    ck.add(name + "_blocks", blocks, "U8")
    ck.add(name + "_scales", scales, "U8")
    lut = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
    return lut[codes] * torch.pow(2.0, (scales.float() - 127.0)).repeat_interleave(32, -1)


def mixtral_like(name, model_type, k, extra_cfg=None, sel_bias=False, dtype="F32"):
    cfg = {"model_type": model_type, "hidden_size": H, "intermediate_size": F_, "num_local_experts": E,
           "num_experts_per_tok": k, "num_hidden_layers": 2, **(extra_cfg or {})}
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"model.layers.{layer}.block_sparse_moe."
        wg = rnd(E, H, s=0.5)
        ck.add(p + "gate.weight", wg)
        bias = rnd(E, s=0.3) if sel_bias else None
        if sel_bias:
            ck.add(p + "e_score_correction_bias", bias)
        ws = experts_per_module(ck, p + "experts", ("w1", "w3", "w2"), dtype)
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    if model_type == "mixtral":
        w = torch.softmax(logits, dim=1, dtype=torch.float)
        w, idx = topk(w, k)
        w = w / w.sum(dim=-1, keepdim=True)
    else:  # MiniMaxM2SparseMoeBlock.route_tokens_to_experts
        sc = torch.sigmoid(logits.float())
        idx = topk(sc + bias, k)[1]
        w = sc.gather(1, idx)
        w = w / w.sum(dim=-1, keepdim=True)
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e]))
    ck.save(x, y, logits, idx)


def qwen_like(name, model_type, k, norm, shared_ffn=0):
    cfg = {"model_type": model_type, "hidden_size": H, "num_experts": E, "num_experts_per_tok": k,
           "num_hidden_layers": 2, "norm_topk_prob": norm}
    if model_type == "olmoe":
        cfg["intermediate_size"] = F_
    else:
        cfg["moe_intermediate_size"] = F_
        cfg["intermediate_size"] = 4 * F_
        cfg["decoder_sparse_step"] = 1
        cfg["mlp_only_layers"] = []
    if shared_ffn:
        cfg["shared_expert_intermediate_size"] = shared_ffn
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        wg = rnd(E, H, s=0.5)
        ck.add(p + "gate.weight", wg)
        ws = experts_per_module(ck, p + "experts", ("gate_proj", "up_proj", "down_proj"))
        if shared_ffn:
            s1, s3, s2, sg = rnd(shared_ffn, H), rnd(shared_ffn, H), rnd(H, shared_ffn), rnd(1, H)
            ck.add(p + "shared_expert.gate_proj.weight", s1)
            ck.add(p + "shared_expert.up_proj.weight", s3)
            ck.add(p + "shared_expert.down_proj.weight", s2)
            ck.add(p + "shared_expert_gate.weight", sg)
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    if norm:
        w = w / w.sum(dim=-1, keepdim=True)
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e]))
    if shared_ffn:  # Qwen2MoeSparseMoeBlock: sigmoid(shared_expert_gate(x)) * shared_expert(x)
        y = y + torch.sigmoid(x @ sg.T) * swiglu_mlp(x, s1, s3, s2)
    ck.save(x, y, logits, idx)


def dense_layer0(ck):
    for proj, shape in (("gate_proj", (3 * F_, H)), ("up_proj", (3 * F_, H)), ("down_proj", (H, 3 * F_))):
        ck.add(f"model.layers.0.mlp.{proj}.weight", rnd(*shape))


def deepseek_like(name, model_type, k, n_group, topk_group, scale, norm, n_shared, scoring, fp8=False):
    cfg = {"model_type": model_type, "hidden_size": H, "n_routed_experts": E, "moe_intermediate_size": F_,
           "intermediate_size": 3 * F_, "num_experts_per_tok": k, "num_hidden_layers": 2, "first_k_dense_replace": 1,
           "moe_layer_freq": 1, "n_group": n_group, "topk_group": topk_group, "routed_scaling_factor": scale,
           "norm_topk_prob": norm, "n_shared_experts": n_shared, "scoring_func": scoring}
    if model_type == "dots1":
        # Dots1Config: no moe_layer_freq; its scoring_func (default "softmax") is not read by
        # Dots1TopkRouter, which always scores with sigmoid, as DeepSeek-V3's router does.
        del cfg["moe_layer_freq"]
        cfg["scoring_func"] = "softmax"
    if scoring == "softmax":
        cfg["topk_method"] = "group_limited_greedy" if n_group > 1 else "greedy"
    ck = Ckpt(name, cfg)
    dense_layer0(ck)  # first_k_dense_replace = 1
    p = "model.layers.1.mlp."
    wg = rnd(E, H, s=0.5)
    ck.add(p + "gate.weight", wg)
    bias = None
    if scoring == "sigmoid":
        bias = rnd(E, s=0.3)
        ck.add(p + "gate.e_score_correction_bias", bias)
    if fp8:
        ws = []
        for e in range(E):
            q = f"{p}experts.{e}."
            ws.append((fp8_weight(ck, q + "gate_proj.weight", F_, H), fp8_weight(ck, q + "up_proj.weight", F_, H),
                       fp8_weight(ck, q + "down_proj.weight", H, F_)))
    else:
        ws = experts_per_module(ck, p + "experts", ("gate_proj", "up_proj", "down_proj"))
    fs = F_ * n_shared
    s1, s3, s2 = rnd(fs, H), rnd(fs, H), rnd(H, fs)
    ck.add(p + "shared_experts.gate_proj.weight", s1)
    ck.add(p + "shared_experts.up_proj.weight", s3)
    ck.add(p + "shared_experts.down_proj.weight", s2)
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    if scoring == "softmax":
        idx, w = hf_deepseek_v2(logits, k, n_group, topk_group, scale, norm)
    else:
        idx, w = hf_deepseek_v3(logits, bias, k, n_group, topk_group, scale, norm)
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e])) + swiglu_mlp(x, s1, s3, s2)
    ck.save(x, y, logits, idx)


def gpt_oss(name, k, mxfp4=False):
    FG = 32  # MXFP4 blocks are 32 along K (H and F)
    cfg = {"model_type": "gpt_oss", "hidden_size": H, "intermediate_size": FG, "num_local_experts": E,
           "num_experts_per_tok": k, "num_hidden_layers": 2, "swiglu_limit": 7.0}
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        wr, br = rnd(E, H, s=0.5), rnd(E, s=0.5)
        ck.add(p + "router.weight", wr)
        ck.add(p + "router.bias", br)
        if mxfp4:
            gu = mxfp4_weight(ck, p + "experts.gate_up_proj", E, 2 * FG, H).transpose(1, 2)  # [E, H, 2F]
            down = mxfp4_weight(ck, p + "experts.down_proj", E, H, FG).transpose(1, 2)    # [E, F, H]
        else:
            gu, down = rnd(E, H, 2 * FG, s=0.4), rnd(E, FG, H, s=0.4)
            ck.add(p + "experts.gate_up_proj", gu)
            ck.add(p + "experts.down_proj", down)
        gub, db = rnd(E, 2 * FG, s=0.5), rnd(E, H, s=0.2)
        ck.add(p + "experts.gate_up_proj_bias", gub)
        ck.add(p + "experts.down_proj_bias", db)
    x = rnd(T, H, s=1.0)
    logits = x @ wr.T + br  # GptOssTopKRouter
    top, idx = topk(logits, k)
    w = torch.softmax(top, dim=1)

    def expert(e, v):  # GptOssExperts (training branch)
        gate_up = v @ gu[e] + gub[e]
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=7.0)
        up = up.clamp(min=-7.0, max=7.0)
        glu = gate * torch.sigmoid(gate * 1.702)
        return ((up + 1) * glu) @ down[e] + db[e]

    y = routed(x, idx, w, expert)
    ck.save(x, y, logits, idx)


def llama4(name):
    cfg = {"model_type": "llama4", "text_config": {"model_type": "llama4_text", "hidden_size": H, "intermediate_size": F_,
                                                  "num_local_experts": E, "num_experts_per_tok": 1, "num_hidden_layers": 2,
                                                  "interleave_moe_layer_step": 1}}
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"language_model.model.layers.{layer}.feed_forward."
        wr = rnd(E, H, s=0.5)
        ck.add(p + "router.weight", wr)
        gu, down = rnd(E, H, 2 * F_), rnd(E, F_, H)
        ck.add(p + "experts.gate_up_proj", gu)
        ck.add(p + "experts.down_proj", down)
        s1, s3, s2 = rnd(F_, H), rnd(F_, H), rnd(H, F_)
        ck.add(p + "shared_expert.gate_proj.weight", s1)
        ck.add(p + "shared_expert.up_proj.weight", s3)
        ck.add(p + "shared_expert.down_proj.weight", s2)
    x = rnd(T, H, s=1.0)
    logits = x @ wr.T
    top, idx = topk(logits, 1)  # Llama4Router: sigmoid of the chosen logit
    w = torch.sigmoid(top.float())

    def expert(e, v):  # Llama4TextExperts: gate, up = gate_up.chunk(2)
        gate_up = v @ gu[e]
        gate, up = gate_up.chunk(2, dim=-1)
        return (up * F.silu(gate)) @ down[e]

    y = routed(x, idx, w, expert, weight_on_input=True) + swiglu_mlp(x, s1, s3, s2)
    ck.save(x, y, logits, idx)


def granite(name, k, shared_ffn):
    cfg = {"model_type": "granitemoeshared", "hidden_size": H, "intermediate_size": F_, "num_local_experts": E,
           "num_experts_per_tok": k, "num_hidden_layers": 2, "shared_intermediate_size": shared_ffn}
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"model.layers.{layer}."
        wr = rnd(E, H, s=0.5)
        ck.add(p + "block_sparse_moe.router.layer.weight", wr)
        win, wout = rnd(E, 2 * F_, H), rnd(E, H, F_)
        ck.add(p + "block_sparse_moe.input_linear.weight", win)
        ck.add(p + "block_sparse_moe.output_linear.weight", wout)
        sin, sout = rnd(2 * shared_ffn, H), rnd(H, shared_ffn)
        ck.add(p + "shared_mlp.input_linear.weight", sin)
        ck.add(p + "shared_mlp.output_linear.weight", sout)
    x = rnd(T, H, s=1.0)
    logits = x @ wr.T
    top, idx = topk(logits.float(), k)  # GraniteMoeTopKGating
    w = torch.softmax(top, dim=1)

    def expert(e, v):  # GraniteMoeParallelExperts + chunk(2): activation(first) * second
        h = v @ win[e].T
        a, b = h.chunk(2, dim=-1)
        return (F.silu(a) * b) @ wout[e].T

    hs = x @ sin.T
    a, b = hs.chunk(2, dim=-1)
    y = routed(x, idx, w, expert) + (F.silu(a) * b) @ sout.T
    ck.save(x, y, logits, idx)


def main():
    os.makedirs(OUT, exist_ok=True)
    with torch.no_grad():
        mixtral_like("mixtral", "mixtral", 2)
        mixtral_like("mixtral_bf16", "mixtral", 2, dtype="BF16")
        mixtral_like("minimax_m2", "minimax_m2", 3, sel_bias=True)
        qwen_like("qwen2_moe", "qwen2_moe", 4, False, shared_ffn=24)
        qwen_like("qwen3_moe", "qwen3_moe", 4, True)
        qwen_like("olmoe", "olmoe", 3, False)
        deepseek_like("deepseek_v2", "deepseek_v2", 3, 4, 2, 16.0, False, 2, "softmax")
        deepseek_like("deepseek_v3", "deepseek_v3", 4, 4, 2, 2.5, True, 1, "sigmoid")
        deepseek_like("deepseek_v3_fp8", "deepseek_v3", 4, 4, 2, 2.5, True, 1, "sigmoid", fp8=True)
        deepseek_like("glm4_moe", "glm4_moe", 4, 1, 1, 2.5, True, 1, "sigmoid")
        gpt_oss("gpt_oss", 2)
        gpt_oss("gpt_oss_mxfp4", 2, mxfp4=True)
        llama4("llama4")
        granite("granitemoeshared", 2, 24)
    print("wrote", sorted(os.listdir(OUT)))


# ---- GGUF: the same blocks under llama.cpp's names ---------------------------------------

def read_safetensors(path):
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"F32": "<f4", "BF16": "<u2"}[info["dtype"]]
        a = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"])
        out[name] = (a.astype("<u4") << 16).view("<f4") if info["dtype"] == "BF16" else a
    return out


def write_gguf(path, arch, meta, tensors, align=32):
    """meta: {key: (kind, value)} (kinds of gen_io_golden); tensors: [(name, ggml type, ne, raw)]."""
    from gen_io_golden import gguf_header
    meta = {"general.architecture": ("str", arch), **meta}
    out = gguf_header(meta, [(name, ty, ne, len(raw)) for name, ty, ne, raw in tensors], align)
    for _, _, _, raw in tensors:
        out += raw + b"\0" * ((align - len(raw) % align) % align)
    with open(path, "wb") as f:
        f.write(out)


def f32(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def gguf_from_hf(name, arch, meta, names, file="model.gguf"):
    """Writes tests/data/models/<name>/model.gguf: layer 1's tensors renamed (F32); layer 0 absent
    (a dense layer: no ffn_gate_inp). names: llama.cpp name -> (HF name, ne), or a callable."""
    st = read_safetensors(os.path.join(OUT, name, "model.safetensors"))
    tensors = []
    for gname, (src, ne) in names.items():
        a = src(st) if callable(src) else st[src]
        assert a.size == int(np.prod(ne)), (gname, a.shape, ne)
        tensors.append((gname, 0, ne, f32(a)))
    write_gguf(os.path.join(OUT, name, file), arch, {f"{arch}.block_count": ("u32", 2), **meta}, tensors)


def gguf_files():
    Fs = 24
    m = "model.layers.1."
    stack = lambda pre, proj: (lambda st: np.stack([st[f"{pre}.{e}.{proj}.weight"] for e in range(E)]))
    gguf_from_hf("mixtral", "llama", {
        "llama.embedding_length": ("u32", H), "llama.expert_count": ("u32", E), "llama.expert_used_count": ("u32", 2)}, {
        "blk.1.ffn_gate_inp.weight": (m + "block_sparse_moe.gate.weight", [H, E]),
        "blk.1.ffn_gate_exps.weight": (stack(m + "block_sparse_moe.experts", "w1"), [H, F_, E]),
        "blk.1.ffn_up_exps.weight": (stack(m + "block_sparse_moe.experts", "w3"), [H, F_, E]),
        "blk.1.ffn_down_exps.weight": (stack(m + "block_sparse_moe.experts", "w2"), [F_, H, E])})
    gguf_from_hf("qwen2_moe", "qwen2moe", {
        "qwen2moe.embedding_length": ("u32", H), "qwen2moe.expert_count": ("u32", E),
        "qwen2moe.expert_used_count": ("u32", 4)}, {
        "blk.1.ffn_gate_inp.weight": (m + "mlp.gate.weight", [H, E]),
        "blk.1.ffn_gate_exps.weight": (stack(m + "mlp.experts", "gate_proj"), [H, F_, E]),
        "blk.1.ffn_up_exps.weight": (stack(m + "mlp.experts", "up_proj"), [H, F_, E]),
        "blk.1.ffn_down_exps.weight": (stack(m + "mlp.experts", "down_proj"), [F_, H, E]),
        "blk.1.ffn_gate_shexp.weight": (m + "mlp.shared_expert.gate_proj.weight", [H, Fs]),
        "blk.1.ffn_up_shexp.weight": (m + "mlp.shared_expert.up_proj.weight", [H, Fs]),
        "blk.1.ffn_down_shexp.weight": (m + "mlp.shared_expert.down_proj.weight", [Fs, H]),
        # [H, 1], as llama.cpp's current converter writes it (older files: [H], as qwen3_next's below)
        "blk.1.ffn_gate_inp_shexp.weight": (m + "mlp.shared_expert_gate.weight", [H, 1])})
    ds_meta = {
        "deepseek2.embedding_length": ("u32", H), "deepseek2.expert_count": ("u32", E),
        "deepseek2.expert_used_count": ("u32", 4), "deepseek2.expert_shared_count": ("u32", 1),
        "deepseek2.expert_weights_scale": ("f32", 2.5), "deepseek2.expert_weights_norm": ("bool", True),
        "deepseek2.expert_gating_func": ("u32", 2), "deepseek2.expert_group_count": ("u32", 4),
        "deepseek2.expert_group_used_count": ("u32", 2), "deepseek2.leading_dense_block_count": ("u32", 1)}
    ds_names = {
        "blk.1.ffn_gate_inp.weight": (m + "mlp.gate.weight", [H, E]),
        "blk.1.exp_probs_b.bias": (m + "mlp.gate.e_score_correction_bias", [E]),
        "blk.1.ffn_gate_exps.weight": (stack(m + "mlp.experts", "gate_proj"), [H, F_, E]),
        "blk.1.ffn_up_exps.weight": (stack(m + "mlp.experts", "up_proj"), [H, F_, E]),
        "blk.1.ffn_down_exps.weight": (stack(m + "mlp.experts", "down_proj"), [F_, H, E]),
        "blk.1.ffn_gate_shexp.weight": (m + "mlp.shared_experts.gate_proj.weight", [H, F_]),
        "blk.1.ffn_up_shexp.weight": (m + "mlp.shared_experts.up_proj.weight", [H, F_]),
        "blk.1.ffn_down_shexp.weight": (m + "mlp.shared_experts.down_proj.weight", [F_, H])}
    gguf_from_hf("deepseek_v3", "deepseek2", ds_meta, ds_names)
    # As converted before llama.cpp wrote the group keys: loads, routes without group limits
    # (as llama.cpp does) and says so once through the loader's warning sink.
    legacy = {k: v for k, v in ds_meta.items() if "expert_group" not in k}
    gguf_from_hf("deepseek_v3", "deepseek2", legacy, ds_names, file="model_legacy.gguf")
    FG = 32
    gu = lambda st: st[m + "mlp.experts.gate_up_proj"]  # [E, H, 2F]
    gguf_from_hf("gpt_oss", "gpt-oss", {
        "gpt-oss.embedding_length": ("u32", H), "gpt-oss.expert_count": ("u32", E),
        "gpt-oss.expert_used_count": ("u32", 2)}, {
        "blk.1.ffn_gate_inp.weight": (m + "mlp.router.weight", [H, E]),
        "blk.1.ffn_gate_inp.bias": (m + "mlp.router.bias", [E]),
        "blk.1.ffn_gate_exps.weight": (lambda st: gu(st)[:, :, 0::2].transpose(0, 2, 1), [H, FG, E]),
        "blk.1.ffn_up_exps.weight": (lambda st: gu(st)[:, :, 1::2].transpose(0, 2, 1), [H, FG, E]),
        "blk.1.ffn_down_exps.weight": (lambda st: st[m + "mlp.experts.down_proj"].transpose(0, 2, 1), [FG, H, E]),
        "blk.1.ffn_gate_exps.bias": (lambda st: st[m + "mlp.experts.gate_up_proj_bias"][:, 0::2], [FG, E]),
        "blk.1.ffn_up_exps.bias": (lambda st: st[m + "mlp.experts.gate_up_proj_bias"][:, 1::2], [FG, E]),
        "blk.1.ffn_down_exps.bias": (m + "mlp.experts.down_proj_bias", [H, E])})
    # Fused as newer converters write it: per expert the F gate rows, then the F up rows (and
    # the biases likewise).
    gate = lambda st: gu(st)[:, :, 0::2].transpose(0, 2, 1)  # [E, F, H]
    up = lambda st: gu(st)[:, :, 1::2].transpose(0, 2, 1)
    gub = lambda st: st[m + "mlp.experts.gate_up_proj_bias"]  # [E, 2F] interleaved
    gguf_from_hf("gpt_oss", "gpt-oss", {
        "gpt-oss.embedding_length": ("u32", H), "gpt-oss.expert_count": ("u32", E),
        "gpt-oss.expert_used_count": ("u32", 2)}, {
        "blk.1.ffn_gate_inp.weight": (m + "mlp.router.weight", [H, E]),
        "blk.1.ffn_gate_inp.bias": (m + "mlp.router.bias", [E]),
        "blk.1.ffn_gate_up_exps.weight": (lambda st: np.concatenate([gate(st), up(st)], axis=1), [H, 2 * FG, E]),
        "blk.1.ffn_down_exps.weight": (lambda st: st[m + "mlp.experts.down_proj"].transpose(0, 2, 1), [FG, H, E]),
        "blk.1.ffn_gate_up_exps.bias": (lambda st: np.concatenate([gub(st)[:, 0::2], gub(st)[:, 1::2]], axis=1), [2 * FG, E]),
        "blk.1.ffn_down_exps.bias": (m + "mlp.experts.down_proj_bias", [H, E])}, file="model_fused.gguf")


def gguf_q8_0():
    """A Mixtral-style GGUF with Q8_0 experts (H = F = 32), and its torch golden on the
    dequantized weights; w1_dequant.npy holds numpy's dequantization of the gate stack."""
    import gen_formats_golden as fg
    name, EQ, FQ, k = "mixtral_q8_0", 4, 32, 2
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    wg = rnd(EQ, H, s=0.5)
    tensors = [("blk.0.ffn_gate_inp.weight", 0, [H, EQ], f32(wg.numpy()))]
    deq, per_expert = {}, {}
    for proj, (rows, cols) in (("gate", (FQ, H)), ("up", (FQ, H)), ("down", (H, FQ))):
        raw, vals = b"", []
        per_expert[proj] = []
        for e in range(EQ):
            w = rnd(rows, cols).numpy().astype(np.float32)
            fg.N, fg.K = rows, cols
            data, _, dq = fg.q8_0(w)
            raw += data
            per_expert[proj].append(data)
            vals.append(dq)
        deq[proj] = torch.from_numpy(np.stack(vals))
        tensors.append((f"blk.0.ffn_{proj}_exps.weight", 8, [cols, rows, EQ], raw))
    write_gguf(os.path.join(d, "model.gguf"), "llama", {
        "llama.block_count": ("u32", 1), "llama.embedding_length": ("u32", H), "llama.expert_count": ("u32", EQ),
        "llama.expert_used_count": ("u32", k)}, tensors)
    # The same experts as newer converters write them: gate and up fused per expert into
    # ffn_gate_up_exps [H, 2F, E] (gate = the first F rows, as build_moe_ffn's views take them).
    fused = b"".join(per_expert["gate"][e] + per_expert["up"][e] for e in range(EQ))
    write_gguf(os.path.join(d, "model_fused.gguf"), "llama", {
        "llama.block_count": ("u32", 1), "llama.embedding_length": ("u32", H), "llama.expert_count": ("u32", EQ),
        "llama.expert_used_count": ("u32", k)},
        [tensors[0], ("blk.0.ffn_gate_up_exps.weight", 8, [H, 2 * FQ, EQ], fused), tensors[3]])
    np.save(os.path.join(d, "w1_dequant.npy"), deq["gate"].numpy().reshape(EQ * FQ, H))
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    w = w / torch.clamp(w.sum(dim=-1, keepdim=True), min=6.103515625e-5)  # llama.cpp's norm
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, deq["gate"][e], deq["up"][e], deq["down"][e]))
    np.save(os.path.join(d, "x.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "y.npy"), y.numpy().astype(np.float32))
    np.save(os.path.join(d, "indices.npy"), idx.numpy().astype(np.int32))


def gguf_q4_k_m(name="mixtral_q4_k_m", up=("q4_k", 12), down=("q6_k", 14), FQ=256):
    """A Mixtral-style GGUF as llama.cpp's Q4_K_M stores MoE experts: Q4_K gate and up, Q6_K
    down (H = F = 256, one super-block per row), and its torch golden on the dequantized
    weights (numpy's statement of both block layouts). `up` / `down`: other ggml types
    (a numpy quantizer of gen_formats_golden and the ggml type id), e.g. Q5_K_M's. `FQ`: the
    expert FFN width (not a multiple of 256: the down projections in llama.cpp's fallback type,
    as DeepSeek-V2-Lite's and Qwen1.5-MoE's F = 1408 files store them)."""
    import gen_formats_golden as fg
    EQ, HQ, k = 3, 256, 2
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    wg = rnd(EQ, HQ, s=0.5)
    tensors = [("blk.0.ffn_gate_inp.weight", 0, [HQ, EQ], f32(wg.numpy()))]
    deq = {}
    uq, dq_ = getattr(fg, up[0]), getattr(fg, down[0])
    for proj, (rows, cols), quant, gtype in (("gate", (FQ, HQ), uq, up[1]), ("up", (FQ, HQ), uq, up[1]),
                                              ("down", (HQ, FQ), dq_, down[1])):
        raw, vals = b"", []
        for e in range(EQ):
            w = (rnd(rows, cols) / 16).numpy().astype(np.float32)
            fg.N, fg.K = rows, cols
            data, _, dq = quant(w)
            raw += data
            vals.append(dq)
        deq[proj] = torch.from_numpy(np.stack(vals))
        tensors.append((f"blk.0.ffn_{proj}_exps.weight", gtype, [cols, rows, EQ], raw))
    write_gguf(os.path.join(d, "model.gguf"), "llama", {
        "llama.block_count": ("u32", 1), "llama.embedding_length": ("u32", HQ), "llama.expert_count": ("u32", EQ),
        "llama.expert_used_count": ("u32", k)}, tensors)
    x = rnd(T, HQ, s=1.0)
    logits = x @ wg.T
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    w = w / torch.clamp(w.sum(dim=-1, keepdim=True), min=6.103515625e-5)  # llama.cpp's norm
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, deq["gate"][e], deq["up"][e], deq["down"][e]))
    np.save(os.path.join(d, "x.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "y.npy"), y.numpy().astype(np.float32))
    np.save(os.path.join(d, "indices.npy"), idx.numpy().astype(np.int32))


def dots1_files():
    """dots.llm1 (HF Dots1MoE): DeepSeek-V3's router and tensor layout, 2 shared experts; and
    the same block as llama.cpp's `dots1` GGUF."""
    deepseek_like("dots1", "dots1", 4, 4, 2, 2.5, True, 2, "sigmoid")
    m = "model.layers.1."
    Fs = 2 * F_
    stack = lambda pre, proj: (lambda st: np.stack([st[f"{pre}.{e}.{proj}.weight"] for e in range(E)]))
    gguf_from_hf("dots1", "dots1", {
        "dots1.embedding_length": ("u32", H), "dots1.expert_count": ("u32", E), "dots1.expert_used_count": ("u32", 4),
        "dots1.expert_shared_count": ("u32", 2), "dots1.expert_weights_scale": ("f32", 2.5),
        "dots1.expert_weights_norm": ("bool", True), "dots1.expert_gating_func": ("u32", 2),
        "dots1.expert_group_count": ("u32", 4), "dots1.expert_group_used_count": ("u32", 2),
        "dots1.leading_dense_block_count": ("u32", 1)}, {
        "blk.1.ffn_gate_inp.weight": (m + "mlp.gate.weight", [H, E]),
        "blk.1.exp_probs_b.bias": (m + "mlp.gate.e_score_correction_bias", [E]),
        "blk.1.ffn_gate_exps.weight": (stack(m + "mlp.experts", "gate_proj"), [H, F_, E]),
        "blk.1.ffn_up_exps.weight": (stack(m + "mlp.experts", "up_proj"), [H, F_, E]),
        "blk.1.ffn_down_exps.weight": (stack(m + "mlp.experts", "down_proj"), [F_, H, E]),
        "blk.1.ffn_gate_shexp.weight": (m + "mlp.shared_experts.gate_proj.weight", [H, Fs]),
        "blk.1.ffn_up_shexp.weight": (m + "mlp.shared_experts.up_proj.weight", [H, Fs]),
        "blk.1.ffn_down_shexp.weight": (m + "mlp.shared_experts.down_proj.weight", [Fs, H])})


def ernie4_5_moe(name, k, n_shared, norm_min=1e-12):
    """HF Ernie4_5_MoeSparseMoeBlock: selection on softmax + moe_statics bias, weights the
    unbiased probabilities / max(sum, moe_norm_min); shared experts added."""
    cfg = {"model_type": "ernie4_5_moe", "hidden_size": H, "moe_num_experts": E, "moe_k": k, "moe_intermediate_size": F_,
           "intermediate_size": 3 * F_, "num_hidden_layers": 2, "moe_num_shared_experts": n_shared,
           "moe_layer_start_index": 1, "moe_layer_end_index": -1, "moe_layer_interval": 1, "moe_norm_min": norm_min}
    ck = Ckpt(name, cfg)
    dense_layer0(ck)
    p = "model.layers.1.mlp."
    wg = rnd(E, H, s=0.5)
    ck.add(p + "gate.weight", wg)
    bias = rnd(1, E, s=0.05)
    ck.add(p + "moe_statics.e_score_correction_bias", bias)
    ws = experts_per_module(ck, p + "experts", ("gate_proj", "up_proj", "down_proj"))
    fs = F_ * n_shared
    s1, s3, s2 = rnd(fs, H), rnd(fs, H), rnd(H, fs)
    ck.add(p + "shared_experts.gate_proj.weight", s1)
    ck.add(p + "shared_experts.up_proj.weight", s3)
    ck.add(p + "shared_experts.down_proj.weight", s2)
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    prob = torch.softmax(logits, dim=1, dtype=torch.float)
    _, idx = topk(prob + bias, k)
    w = prob.gather(1, idx)
    w = w / torch.clamp(w.sum(dim=-1, keepdim=True), min=norm_min)
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e])) + swiglu_mlp(x, s1, s3, s2)
    ck.save(x, y, logits, idx)


def hunyuan_v1_moe(name, k, shared_ffn):
    """HF HunYuanMoEV1Moe: softmax, top-k, / sum; the shared MLP always added. moe_topk and
    num_experts given per layer, as the released configs do."""
    cfg = {"model_type": "hunyuan_v1_moe", "hidden_size": H, "num_experts": [E, E], "moe_topk": [k, k],
           "intermediate_size": F_, "moe_intermediate_size": [F_, F_], "num_hidden_layers": 2, "num_shared_expert": 1}
    ck = Ckpt(name, cfg)
    p = "model.layers.1.mlp."
    wg = rnd(E, H, s=0.5)
    ck.add(p + "gate.wg.weight", wg)
    ws = experts_per_module(ck, p + "experts", ("gate_proj", "up_proj", "down_proj"))
    s1, s3, s2 = rnd(shared_ffn, H), rnd(shared_ffn, H), rnd(H, shared_ffn)
    ck.add(p + "shared_mlp.gate_proj.weight", s1)
    ck.add(p + "shared_mlp.up_proj.weight", s3)
    ck.add(p + "shared_mlp.down_proj.weight", s2)
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, idx = topk(w, k)
    w = w / w.sum(dim=-1, keepdim=True)
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e])) + swiglu_mlp(x, s1, s3, s2)
    ck.save(x, y, logits, idx)


def longcat_flash(name, k, zero, scale):
    """HF LongcatFlashMoE: one softmax over E real + `zero` identity experts, selection on
    scores + e_score_correction_bias, weights the unbiased scores x routed_scaling_factor; a slot
    on an identity expert adds w * x."""
    cfg = {"model_type": "longcat_flash", "hidden_size": H, "n_routed_experts": E, "zero_expert_num": zero,
           "moe_topk": k, "expert_ffn_hidden_size": F_, "ffn_hidden_size": 3 * F_, "routed_scaling_factor": scale,
           "num_layers": 2}
    ck = Ckpt(name, cfg)
    p = "model.layers.1.mlp."
    R = E + zero
    wg = rnd(R, H, s=0.5)
    ck.add(p + "router.classifier.weight", wg)
    bias = rnd(R, s=0.05)
    ck.add(p + "router.e_score_correction_bias", bias)
    ws = experts_per_module(ck, p + "experts", ("gate_proj", "up_proj", "down_proj"))
    x = rnd(T, H, s=1.0)
    logits = x @ wg.T
    scores = torch.softmax(logits, dim=-1)
    _, idx = topk(scores + bias, k)
    w = scores.gather(1, idx) * scale
    y = routed(x, idx, w, lambda e, v: swiglu_mlp(v, *ws[e]) if e < E else v)
    ck.save(x, y, logits, idx)


def dbrx(name, k):
    """DBRX (HF DbrxFFN): experts fused per projection over all experts, w2 stored as down^T."""
    cfg = {"model_type": "dbrx", "d_model": H, "n_layers": 2,
           "ffn_config": {"ffn_hidden_size": F_, "moe_num_experts": E, "moe_top_k": k,
                          "moe_normalize_expert_weights": 1.0, "ffn_act_fn": {"name": "silu"}}}
    ck = Ckpt(name, cfg)
    for layer in range(2):
        p = f"transformer.blocks.{layer}.ffn."
        wr = rnd(E, H, s=0.5)
        w1, v1, w2 = rnd(E * F_, H), rnd(E * F_, H), rnd(E * F_, H)
        ck.add(p + "router.layer.weight", wr)
        ck.add(p + "experts.mlp.w1", w1)
        ck.add(p + "experts.mlp.v1", v1)
        ck.add(p + "experts.mlp.w2", w2)
    x = rnd(T, H, s=1.0)
    logits = x @ wr.T
    weights = logits.softmax(dim=-1, dtype=torch.float32)  # DbrxRouter
    top, idx = torch.topk(weights, k, dim=-1)
    top = top / torch.norm(top, p=1.0, dim=-1, keepdim=True)
    w1e, v1e, w2e = w1.view(E, F_, H), v1.view(E, F_, H), w2.view(E, F_, H)

    def expert(e, v):  # DbrxExpertGLU
        return (F.silu(v @ w1e[e].t()) * (v @ v1e[e].t())) @ w2e[e]

    ck.save(x, routed(x, idx, top, expert), logits, idx)


def more_families():
    ernie4_5_moe("ernie4_5_moe", 3, 2)
    # Qwen3NextSparseMoeBlock is Qwen2MoeSparseMoeBlock; norm_topk_prob left to its default (true).
    qwen_like("qwen3_next", "qwen3_next", 4, True, shared_ffn=24)
    cfg_path = os.path.join(OUT, "qwen3_next", "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    del cfg["norm_topk_prob"]
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)
    hunyuan_v1_moe("hunyuan_v1_moe", 3, 24)
    longcat_flash("longcat_flash", 4, 4, 2.0)
    # The same blocks as llama.cpp's GGUF architectures (its generic MoE keys and names).
    m = "model.layers.1."
    stack = lambda pre, proj: (lambda st: np.stack([st[f"{pre}.{e}.{proj}.weight"] for e in range(E)]))

    def gguf(name, arch, k, router, bias, experts, shared, fs, shared_gate=None):
        meta = {f"{arch}.embedding_length": ("u32", H), f"{arch}.expert_count": ("u32", E),
                f"{arch}.expert_used_count": ("u32", k)}
        names = {"blk.1.ffn_gate_inp.weight": (m + router, [H, E]),
                 "blk.1.ffn_gate_exps.weight": (stack(m + experts, "gate_proj"), [H, F_, E]),
                 "blk.1.ffn_up_exps.weight": (stack(m + experts, "up_proj"), [H, F_, E]),
                 "blk.1.ffn_down_exps.weight": (stack(m + experts, "down_proj"), [F_, H, E]),
                 "blk.1.ffn_gate_shexp.weight": (m + shared + ".gate_proj.weight", [H, fs]),
                 "blk.1.ffn_up_shexp.weight": (m + shared + ".up_proj.weight", [H, fs]),
                 "blk.1.ffn_down_shexp.weight": (m + shared + ".down_proj.weight", [fs, H])}
        if bias:
            names["blk.1.exp_probs_b.bias"] = (m + bias, [E])
        if shared_gate:
            names["blk.1.ffn_gate_inp_shexp.weight"] = (m + shared_gate, [H])
        gguf_from_hf(name, arch, meta, names)

    gguf("ernie4_5_moe", "ernie4_5-moe", 3, "mlp.gate.weight", "mlp.moe_statics.e_score_correction_bias", "mlp.experts",
         "mlp.shared_experts", 2 * F_)
    gguf("qwen3_next", "qwen3next", 4, "mlp.gate.weight", None, "mlp.experts", "mlp.shared_expert", 24,
         "mlp.shared_expert_gate.weight")
    gguf("hunyuan_v1_moe", "hunyuan-moe", 3, "mlp.gate.wg.weight", None, "mlp.experts", "mlp.shared_mlp", 24)


if __name__ == "__main__":
    main()
    gguf_files()
    with torch.no_grad():
        gguf_q8_0()
        dots1_files()  # last: the families above keep their random draws
        more_families()
        dbrx("dbrx", 3)
        gguf_q4_k_m()  # last: the files above keep their random draws
        gguf_q4_k_m("mixtral_q5_k_m", ("q5_k", 13), ("q6_k", 14))  # Q5_K_M
        gguf_q4_k_m("mixtral_iq4_xs", ("iq4_xs", 23), ("iq4_xs", 23))  # IQ4_XS experts
        gguf_q4_k_m("mixtral_iq4_nl", ("iq4_nl", 20), ("q5_k", 13))  # a mix moe has no pair for: loads as float
        gguf_q4_k_m("mixtral_q3_k_m", ("q3_k", 11), ("q4_k", 12))  # Q3_K_M
        gguf_q4_k_m("mixtral_q2_k", ("q2_k", 10), ("q3_k", 11))  # Q2_K (its down projections in Q3_K)
        # Q4_K_M at F = 96 (not a multiple of 256): down in Q5_0 (from Q4_K) or Q8_0 (from Q6_K).
        gguf_q4_k_m("mixtral_q4_k_m_f96", ("q4_k", 12), ("q5_0", 6), FQ=96)
        gguf_q4_k_m("mixtral_q4_k_m_f96_q8", ("q4_k", 12), ("q8_0", 8), FQ=96)
        # Q5_K_M at F = 96: down in Q5_1 (from Q5_K) or Q8_0 (from Q6_K).
        gguf_q4_k_m("mixtral_q5_k_m_f96", ("q5_k", 13), ("q5_1", 7), FQ=96)
        gguf_q4_k_m("mixtral_q5_k_m_f96_q8", ("q5_k", 13), ("q8_0", 8), FQ=96)
        # MXFP4 experts in ggml's block_mxfp4 (GPT-OSS GGUFs): a seed of its own, so it
        # regenerates alone (gen.manual_seed(39); gguf_q4_k_m(...) below).
        gen.manual_seed(39)
        gguf_q4_k_m("mixtral_mxfp4", ("mxfp4_dot", 39), ("mxfp4_dot", 39))
