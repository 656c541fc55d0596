#!/usr/bin/env python3
"""Checkpoint files for moe's readers, written with numpy from the published formats.

safetensors (huggingface/safetensors, README "Format"): u64 little-endian header length N,
N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}
padded with spaces, then the byte buffer (offsets relative to it, row-major little-endian).

The small float encodings are decoded here from their definitions, not by bit tricks shared
with the C++ code: E4M3 (OCP FP8: bias 7, subnormals, S.1111.111 NaN), E5M2 (bias 15, IEEE
like), bf16 (the top 16 bits of a float32).

Files (tests/data/io/):
  tiny.safetensors       one tensor per dtype, metadata {"format": "pt"}
  tiny.expected.json     {name: {"dtype", "shape", "values": float list}} (float32 values)
  sharded/               config.json, model.safetensors.index.json, two shards
  tiny.gguf              GGUF v3 (ggml docs/gguf.md): metadata of every value type, tensors of
                         F32 / F16 / BF16 / Q8_0 / Q4_K, alignment 64
  tiny.gguf.json         the metadata, and per tensor its type, ne, offset and bytes (hex)
Run: python3 tests/gen_io_golden.py
"""
import json
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "io")


def e4m3_value(code):
    s = -1.0 if code & 0x80 else 1.0
    e = (code >> 3) & 0xF
    m = code & 7
    if e == 15 and m == 7:
        return float("nan")
    if e == 0:
        return s * (m / 8.0) * 2.0 ** -6
    return s * (1.0 + m / 8.0) * 2.0 ** (e - 7)


def e5m2_value(code):
    s = -1.0 if code & 0x80 else 1.0
    e = (code >> 2) & 0x1F
    m = code & 3
    if e == 31:
        return s * float("inf") if m == 0 else float("nan")
    if e == 0:
        return s * (m / 4.0) * 2.0 ** -14
    return s * (1.0 + m / 4.0) * 2.0 ** (e - 15)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype string, shape, raw bytes)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, raw in tensors:
            f.write(raw)


def main():
    os.makedirs(os.path.join(OUT, "sharded"), exist_ok=True)
    rng = np.random.default_rng(7)
    expected = {}
    tensors = []

    def add(name, dt, shape, raw, values):
        tensors.append((name, dt, shape, raw))
        expected[name] = {"dtype": dt, "shape": list(shape), "values": [float(np.float32(v)) for v in values]}

    a = rng.standard_normal((2, 3)).astype("<f4")
    add("a.f32", "F32", a.shape, a.tobytes(), a.ravel())
    b = np.array([1.0, -2.5, 65504.0, 6.1e-5, 0.0, -0.0], dtype="<f2")
    add("b.f16", "F16", b.shape, b.tobytes(), b.astype(np.float32))
    c32 = rng.standard_normal((2, 2)).astype("<f4")
    c16 = (c32.view("<u4") >> 16).astype("<u2")          # truncation: any top half is a bf16
    add("c.bf16", "BF16", c16.shape, c16.tobytes(), (c16.astype("<u4") << 16).view("<f4").ravel())
    d = np.array([0x00, 0x01, 0x07, 0x08, 0x38, 0x7E, 0xFE, 0xB9, 0x80], dtype=np.uint8)
    add("d.e4m3", "F8_E4M3", d.shape, d.tobytes(), [e4m3_value(int(x)) for x in d])
    g = np.array([0x00, 0x01, 0x3C, 0x7B, 0xC2], dtype=np.uint8)
    add("g.e5m2", "F8_E5M2", g.shape, g.tobytes(), [e5m2_value(int(x)) for x in g])
    e = np.array([-128, -1, 0, 127], dtype=np.int8)
    add("e.i8", "I8", e.shape, e.tobytes(), e)
    u = np.array([[0, 255], [7, 128]], dtype=np.uint8)
    add("f.u8", "U8", u.shape, u.tobytes(), u.ravel())
    i32 = np.array([-5, 1 << 20], dtype="<i4")
    add("h.i32", "I32", i32.shape, i32.tobytes(), i32)
    f64 = np.array([0.1, -3.0], dtype="<f8")
    add("i.f64", "F64", f64.shape, f64.tobytes(), f64.astype(np.float32))
    z = np.zeros((0, 4), dtype="<f4")
    add("j.empty", "F32", z.shape, b"", [])
    write_safetensors(os.path.join(OUT, "tiny.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(OUT, "tiny.expected.json"), "w") as f:
        json.dump(expected, f, indent=1)

    # A sharded folder: two shards and the index that maps names to them.
    x = np.arange(6, dtype="<f4").reshape(2, 3)
    y = -np.arange(4, dtype="<f4")
    write_safetensors(os.path.join(OUT, "sharded", "model-00001-of-00002.safetensors"), [("x", "F32", x.shape, x.tobytes())])
    write_safetensors(os.path.join(OUT, "sharded", "model-00002-of-00002.safetensors"), [("y", "F32", y.shape, y.tobytes())])
    with open(os.path.join(OUT, "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 40}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                                                                  "y": "model-00002-of-00002.safetensors"}}, f, indent=1)
    with open(os.path.join(OUT, "sharded", "config.json"), "w") as f:
        json.dump({"model_type": "mixtral", "num_local_experts": 4}, f, indent=1)

    write_gguf()


def gguf_string(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


# GGUF value types: (type id, struct code)
GT = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"), "i32": (5, "<i"),
      "f32": (6, "<f"), "bool": (7, "<?"), "str": (8, None), "u64": (10, "<Q"), "i64": (11, "<q"), "f64": (12, "<d")}


def gguf_value(kind, v):
    tid, code = GT[kind]
    if kind == "str":
        return gguf_string(v)
    return struct.pack(code, v)


def gguf_header(meta, tensors, align=32):
    """A GGUF v3 header, padded to `align`: meta {key: (kind, value)}, tensors [(name, ggml type,
    ne, byte size)] laid out in order, each padded to `align` (the data follows the header)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, (kind, v) in meta.items():
        out += gguf_string(key) + struct.pack("<I", GT[kind][0]) + gguf_value(kind, v)
    offset = 0
    for name, ty, ne, size in tensors:
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ty, offset)
        offset += (size + align - 1) // align * align
    return out + b"\0" * ((align - len(out) % align) % align)


def write_gguf():
    rng = np.random.default_rng(11)
    align = 64
    meta = [  # (key, kind, value); kind "arr:<elem>" for arrays
        ("general.architecture", "str", "mixtral"),
        ("general.alignment", "u32", align),
        ("mixtral.expert_count", "u32", 4),
        ("mixtral.expert_used_count", "u32", 2),
        ("mixtral.block_count", "u32", 1),
        ("x.u8", "u8", 200), ("x.i8", "i8", -7), ("x.u16", "u16", 65000), ("x.i16", "i16", -300),
        ("x.i32", "i32", -70000), ("x.f32", "f32", 0.5), ("x.bool", "bool", True), ("x.u64", "u64", 1 << 40),
        ("x.i64", "i64", -(1 << 40)), ("x.f64", "f64", 0.1),
        ("tokenizer.ggml.tokens", "arr:str", ["<s>", "a", "bc"]),
        ("x.scores", "arr:f32", [0.25, -1.5]),
    ]
    H, F, E = 64, 16, 4
    gate = rng.standard_normal((E, H)).astype("<f4")          # ne = [H, E]
    f16 = rng.standard_normal((3, 8)).astype("<f2")            # ne = [8, 3]
    bf = (rng.standard_normal(8).astype("<f4").view("<u4") >> 16).astype("<u2")
    q8 = rng.integers(0, 256, size=(E * F * (H // 32), 34), dtype=np.uint8)
    q8[:, 1] &= 0x3B                                          # finite fp16 scales
    q4k = rng.integers(0, 256, size=(2 * 1, 144), dtype=np.uint8)
    q4k[:, 1] &= 0x3B
    q4k[:, 3] &= 0x3B
    tensors = [  # (name, ggml type, ne, raw bytes)
        ("blk.0.ffn_gate_inp.weight", 0, [H, E], gate.tobytes()),
        ("f16", 1, [8, 3], f16.tobytes()),
        ("bf16", 30, [8], bf.tobytes()),
        ("blk.0.ffn_gate_exps.weight", 8, [H, F, E], q8.tobytes()),
        ("q4k", 12, [256, 2], q4k.tobytes()),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, kind, v in meta:
        out += gguf_string(key)
        if kind.startswith("arr:"):
            ek = kind[4:]
            out += struct.pack("<I", 9) + struct.pack("<IQ", GT[ek][0], len(v))
            out += b"".join(gguf_value(ek, x) for x in v)
        else:
            out += struct.pack("<I", GT[kind][0]) + gguf_value(kind, v)
    offset = 0
    infos = {}
    for name, ty, ne, raw in tensors:
        out += gguf_string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ty, offset)
        infos[name] = {"type": ty, "ne": ne, "offset": offset, "bytes": raw.hex()}
        offset += (len(raw) + align - 1) // align * align
    out += b"\0" * ((align - len(out) % align) % align)
    for name, ty, ne, raw in tensors:
        out += raw + b"\0" * ((align - len(raw) % align) % align)
    with open(os.path.join(OUT, "tiny.gguf"), "wb") as f:
        f.write(out)
    values = {}
    for key, kind, v in meta:
        values[key] = float(np.float32(v)) if kind == "f32" else v
    values["x.scores"] = [float(np.float32(x)) for x in meta[-1][2]]
    expected = {"metadata": values, "tensors": infos,
                "values": {"blk.0.ffn_gate_inp.weight": [float(x) for x in gate.ravel()],
                           "f16": [float(x) for x in f16.astype(np.float32).ravel()],
                           "bf16": [float(x) for x in (bf.astype("<u4") << 16).view("<f4")]}}
    with open(os.path.join(OUT, "tiny.gguf.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
