#!/usr/bin/env python3
"""Golden case for moe::sparse_moe_block / mixtral-layer: a small sparse MoE block with the
semantics of HF transformers' MixtralSparseMoeBlock (router linear in float32, softmax in
float32, top-2 with stable ties, renormalise by the sum, per-expert SwiGLU w2(silu(w1 x) * w3 x),
weighted sum). The experts are evaluated in float64 from the float32 weights, so the reference is
the exact value a float32 implementation approximates.

Writes tests/data/layer/{x,router,w1,w3,w2,y}.npy. Run with Debian's python3-torch/numpy:
    python3 tests/gen_layer_golden.py
"""
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "layer")
T, H, F, E, K = 24, 48, 40, 4, 2


def main():
    torch.manual_seed(7)
    x = torch.randn(T, H, dtype=torch.float32)
    router = torch.randn(E, H, dtype=torch.float32) / H ** 0.5
    w1 = (torch.rand(E, F, H) * 2 - 1) / H ** 0.5
    w3 = (torch.rand(E, F, H) * 2 - 1) / H ** 0.5
    w2 = (torch.rand(E, H, F) * 2 - 1) / F ** 0.5
    logits = torch.nn.functional.linear(x, router)
    probs = torch.softmax(logits, dim=1, dtype=torch.float)
    weights, chosen = torch.sort(probs, dim=-1, descending=True, stable=True)
    weights, chosen = weights[:, :K], chosen[:, :K]
    weights = weights / weights.sum(dim=-1, keepdim=True)
    y = torch.zeros(T, H, dtype=torch.float64)
    xd = x.double()
    for e in range(E):
        for t, s in zip(*torch.where(chosen == e)):
            h = torch.nn.functional.silu(xd[t] @ w1[e].double().T) * (xd[t] @ w3[e].double().T)
            y[t] += weights[t, s].double() * (h @ w2[e].double().T)
    os.makedirs(OUT, exist_ok=True)
    for name, a in (("x", x), ("router", router), ("w1", w1), ("w3", w3), ("w2", w2), ("y", y.float())):
        np.save(os.path.join(OUT, name + ".npy"), a.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
