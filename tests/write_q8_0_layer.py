"""Writes a Mixtral-style GGUF of one MoE layer with Q8_0 experts of a chosen size (random but
valid blocks: an fp16 scale and 32 int8 codes each) for the memory check of moe-layer
(tests/check_layer_rss.cmake). NumPy only, so that it runs in the C++ test step.

    python3 write_q8_0_layer.py OUT.gguf E H F
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_io_golden import gguf_header  # noqa: E402


def q8_0_bytes(rng, rows, cols):
    blocks = rows * cols // 32
    d = rng.uniform(1e-3, 1e-2, size=(blocks, 1)).astype("<f2").view(np.uint8)
    qs = rng.integers(-127, 128, size=(blocks, 32), dtype=np.int8).view(np.uint8)
    return np.concatenate([d, qs], axis=1).tobytes()


def main():
    path, E, H, F = sys.argv[1], *map(int, sys.argv[2:5])
    rng = np.random.default_rng(0)
    meta = {"general.architecture": ("str", "llama"), "llama.block_count": ("u32", 1), "llama.embedding_length": ("u32", H),
            "llama.expert_count": ("u32", E), "llama.expert_used_count": ("u32", 2)}
    router = rng.normal(size=(E, H)).astype("<f4").tobytes()
    tensors = [("blk.0.ffn_gate_inp.weight", 0, [H, E], len(router))]
    for proj, (rows, cols) in (("gate", (F, H)), ("up", (F, H)), ("down", (H, F))):
        tensors.append((f"blk.0.ffn_{proj}_exps.weight", 8, [cols, rows, E], E * rows * cols // 32 * 34))
    align = 32
    head = gguf_header(meta, tensors, align)
    with open(path, "wb") as f:
        f.write(head)
        f.write(router + b"\0" * ((align - len(router) % align) % align))
        for _, _, ne, size in tensors[1:]:
            cols, rows, _ = ne
            for _ in range(E):  # one expert at a time: the writer's memory stays small
                f.write(q8_0_bytes(rng, rows, cols))
            f.write(b"\0" * ((align - size % align) % align))


if __name__ == "__main__":
    main()
