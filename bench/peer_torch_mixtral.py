#!/usr/bin/env python3
"""The peer of bench_experts: PyTorch's HF Mixtral block loop, timed on the same shapes.

HF transformers' MixtralSparseMoeBlock.forward, restated with torch only (Debian's python3-torch;
transformers is not a dependency): router linear, softmax in float32, top-k, renormalise, then
per expert: gather its tokens, w2(silu(w1 x) * w3 x) with nn.Linear weights, scale, index_add.
In bf16 (the default) PyTorch runs the linears through oneDNN, which drives AMX tiles where the
CPU has them and AVX512-BF16 otherwise; so every session can measure the ratio issue targets
name against the moe figures of `bench_experts` on the same machine:

    /usr/bin/python3 bench/peer_torch_mixtral.py                       # mixtral shape, bf16
    build/bench/bench_experts --benchmark_filter='BM_Experts/.*/shape:0/T:512/'

Decode (T <= 16) rotates through weight copies (at least 1 GiB and twice the L3, as
bench_experts does) so that weights come from DRAM; prefill uses one copy. Times are medians of
`--repeats` forwards after a warm-up, in ms. Before timing, the loop is checked against a dense
float64 statement of the same block (every expert on every token, masked by the routing).
"""
import argparse
import glob
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {"mixtral": (1024, 3584, 8, 2), "deepseek": (2048, 1408, 64, 6), "tiny": (64, 96, 8, 2)}


def l3_bytes():
    best = 0
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            level = int(open(d + "/level").read())
            size = open(d + "/size").read().strip()
        except (OSError, ValueError):
            continue
        if level != 3 or not size:
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        best = max(best, int(size.rstrip("KMG")) * mult)
    return best or 32 << 20


class Experts:
    """One layer's weights: the router and E experts as nn.Linear modules (HF's layout)."""

    def __init__(self, H, Fd, E, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        a, b = 1.0 / math.sqrt(H), 1.0 / math.sqrt(Fd)
        self.gate = torch.nn.Linear(H, E, bias=False)
        self.w1, self.w3, self.w2 = [], [], []
        with torch.no_grad():
            self.gate.weight.copy_((torch.rand(E, H, generator=g) * 2 - 1) * a)
            for _ in range(E):
                for lst, (rows, cols, s) in ((self.w1, (Fd, H, a)), (self.w3, (Fd, H, a)), (self.w2, (H, Fd, b))):
                    lin = torch.nn.Linear(cols, rows, bias=False)
                    lin.weight.copy_((torch.rand(rows, cols, generator=g) * 2 - 1) * s)
                    lst.append(lin)
        self.gate.to(dtype)
        for lst in (self.w1, self.w3, self.w2):
            for lin in lst:
                lin.to(dtype)

    def bytes(self):
        return sum(l.weight.numel() * l.weight.element_size() for lst in (self.w1, self.w3, self.w2) for l in lst)


def hf_block(x, w, k):
    """MixtralSparseMoeBlock.forward's loop (HF transformers), for x of shape [T, H]."""
    E = len(w.w1)
    router_logits = w.gate(x)
    routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    routing_weights, selected = torch.topk(routing_weights, k, dim=-1)
    routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
    routing_weights = routing_weights.to(x.dtype)
    out = torch.zeros_like(x)
    mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
    for e in range(E):
        idx, top_x = torch.where(mask[e])
        if top_x.numel() == 0:
            continue
        cur = x[top_x]
        h = w.w2[e](F.silu(w.w1[e](cur)) * w.w3[e](cur)) * routing_weights[top_x, idx, None]
        out.index_add_(0, top_x, h.to(x.dtype))
    return out


def dense_reference(x, w, k):
    """The same block in float64, every expert on every token, weighted by the routing mask."""
    xd = x.double()
    p = torch.softmax(xd @ w.gate.weight.double().t(), dim=1)
    top, sel = torch.topk(p, k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(xd)
    for e in range(len(w.w1)):
        h = (F.silu(xd @ w.w1[e].weight.double().t()) * (xd @ w.w3[e].weight.double().t())) @ w.w2[e].weight.double().t()
        weight = (top * (sel == e)).sum(dim=-1, keepdim=True)
        out += weight * h
    return out


def check(dtype, k):
    H, Fd, E, _ = SHAPES["tiny"]
    w = Experts(H, Fd, E, dtype, seed=5)
    x = (torch.rand(33, H, generator=torch.Generator().manual_seed(6)) * 2 - 1).to(dtype)
    got, want = hf_block(x, w, k).double(), dense_reference(x, w, k)
    err = (got - want).norm() / want.norm()
    bound = 2e-2 if dtype == torch.bfloat16 else 1e-5
    if not err <= bound:
        sys.exit(f"peer_torch_mixtral: the HF loop differs from its dense statement: relative L2 {err:.3g} > {bound}")
    return float(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mixtral")
    ap.add_argument("--tokens", default="1,16,512,4096", help="comma-separated T")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch.set_num_threads values")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--repeats", type=int, default=0, help="forwards timed per case (default: 30 decode, 5 prefill)")
    ap.add_argument("--rotation-mib", type=int, default=0, help="decode weight bytes per rotation (default: max(1 GiB, 2 x L3))")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    H, Fd, E, k = SHAPES[args.shape]
    torch.manual_seed(0)
    err = check(dtype, k)
    rot = (args.rotation_mib << 20) if args.rotation_mib else max(1 << 30, 2 * l3_bytes())
    print(f"torch {torch.__version__}, mkldnn {torch.backends.mkldnn.is_available()}, {args.dtype}, shape {args.shape} "
          f"(H {H}, F {Fd}, E {E}, k {k}); dense check: relative L2 {err:.2e}", flush=True)
    layers = [Experts(H, Fd, E, dtype, seed=1)]
    rows = []
    print(f"{'T':>6} {'threads':>7} {'ms':>10} {'GFLOP/s':>9} {'GB/s':>7}")
    for T in [int(t) for t in args.tokens.split(",")]:
        decode = T <= 16
        copies = max(1, -(-rot // layers[0].bytes())) if decode else 1
        while len(layers) < copies:
            layers.append(Experts(H, Fd, E, dtype, seed=len(layers) + 1))
        x = (torch.rand(T, H, generator=torch.Generator().manual_seed(7)) * 2 - 1).to(dtype)
        for th in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(th)
            reps = args.repeats or (30 if decode else 5)
            times = []
            with torch.inference_mode():
                hf_block(x, layers[0], k)  # warm-up
                for i in range(reps):
                    t0 = time.perf_counter()
                    hf_block(x, layers[i % copies], k)
                    times.append(time.perf_counter() - t0)
            ms = statistics.median(times) * 1e3
            active = min(E, T * k)  # experts a decode step reads, at most
            gbps = active * layers[0].bytes() / E / (ms * 1e-3) * 1e-9
            gflops = 6.0 * T * k * H * Fd / (ms * 1e-3) * 1e-9
            rows.append({"shape": args.shape, "dtype": args.dtype, "T": T, "threads": th, "ms": ms, "gflops": gflops, "gbps": gbps})
            print(f"{T:>6} {th:>7} {ms:>10.3f} {gflops:>9.1f} {gbps:>7.1f}", flush=True)
        if not decode:
            del layers[1:]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
