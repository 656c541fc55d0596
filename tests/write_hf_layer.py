"""Writes a Mixtral-style Hugging Face folder (config.json, model.safetensors) of one MoE layer
with BF16 experts of a chosen size (random normal weights) for the memory check of moe-layer's
conversions (tests/check_layer_rss.cmake). NumPy only, so that it runs in the C++ test step.

    python3 write_hf_layer.py OUT_DIR E H F
"""
import json
import os
import struct
import sys

import numpy as np


def bf16_bytes(x):
    """float32 -> bf16 bytes, rounded to nearest even (the values are finite)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()


def main():
    out, E, H, F = sys.argv[1], *map(int, sys.argv[2:5])
    os.makedirs(out, exist_ok=True)
    config = {"model_type": "mixtral", "hidden_size": H, "intermediate_size": F, "num_local_experts": E,
              "num_experts_per_tok": 2, "num_hidden_layers": 1}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    p = "model.layers.0.block_sparse_moe."
    tensors = [(p + "gate.weight", "F32", [E, H], E * H * 4)]
    for e in range(E):
        for name, shape in (("w1", [F, H]), ("w3", [F, H]), ("w2", [H, F])):
            tensors.append((f"{p}experts.{e}.{name}.weight", "BF16", shape, F * H * 2))
    header, offset = {}, 0
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    rng = np.random.default_rng(0)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        f.write(rng.normal(size=(E, H)).astype("<f4").tobytes())
        for _ in tensors[1:]:  # one tensor at a time: the writer's memory stays small
            f.write(bf16_bytes(rng.normal(scale=0.02, size=F * H).astype(np.float32)))


if __name__ == "__main__":
    main()
