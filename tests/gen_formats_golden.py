#!/usr/bin/env python3
"""Golden blocks for moe's weight formats, from a numpy statement of each published format.

For every format: a float32 matrix W (N x K) -> the format's source bytes (our reference
quantizer: ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref for those two, round-to-nearest
rules documented in the C++ headers for the others) -> the dequantized float32 values, written
with the layouts the formats publish:
  - GGUF block_q8_0 {fp16 d; int8 qs[32]}, block_q4_0 {fp16 d; uint8 qs[16]},
    block_q4_K {fp16 d, dmin; uint8 scales[12]; uint8 qs[128]},
    block_q6_K {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d} (ggml-common.h);
  - int8 per output channel (SGLang W8A8): int8 [N, K] + float32 scale [N];
  - int4 in groups (GPTQ / AWQ semantics, row-major nibbles): uint8 [N, K/2] + fp16 [N, K/G]
    (+ uint8 zero points [N, K/G]);
  - FP8 E4M3 with 128 x 128 block scales (DeepSeek-V3 weight_scale_inv);
  - MXFP4 (OCP MX v1.0: E2M1 elements, E8M0 shared scale per 32), GPT-OSS's blocks / scales;
  - bf16 (the top half of a float32, round to nearest even): uint16 [N, K], no scales.
The small float encodings are decoded from their definitions and encoded by searching the
code table (nearest, ties to the even code), not by bit tricks, so the C++ encoders are checked
against an independent method.

Files (tests/data/formats/): w.f32 (N x K float32), then per format NAME.data.bin,
NAME.scales.bin (may be empty) and NAME.deq.f32. Run: python3 tests/gen_formats_golden.py
"""
import os

import numpy as np

f32 = np.float32
N, K = 24, 256
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "formats")


def make_weights():
    rng = np.random.default_rng(20261201)
    w = rng.standard_normal((N, K)).astype(f32) * f32(0.05)
    w[1] *= f32(40.0)                      # large magnitudes
    w[2, :64] = 0                          # all-zero blocks and sub-blocks
    w[3] = np.abs(w[3])                    # one-signed rows (q4_k min = 0)
    w[4] = -np.abs(w[4])
    w[5, 32:64] = f32(1e-30)               # tiny values (fp16 scales flush to 0)
    w[6, ::7] = f32(0.5)                   # exact ties for the rounding rules
    w[7, :32] = np.arange(32, dtype=f32) * f32(0.25) - f32(4.0)
    w[8] *= f32(1e-3)
    return w


def roundf(x):
    """C roundf: half away from zero."""
    t = np.trunc(x)
    return np.where(np.abs(x - t) == f32(0.5), t + np.sign(x), np.rint(x)).astype(f32)


def fp16_bits(x):
    return np.asarray(x, dtype=f32).astype(np.float16).view(np.uint16)


def fp16_val(bits):
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(f32)


# ---- small float encodings, by definition ----
def e4m3_table():
    vals = np.zeros(256, dtype=np.float64)
    for b in range(256):
        s, e, m = b >> 7, (b >> 3) & 15, b & 7
        v = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
        if e == 15 and m == 7:
            v = np.nan
        vals[b] = -v if s else v
    return vals


E4M3 = e4m3_table()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)


def encode_nearest(x, table, codes):
    """Nearest code of `table` among `codes` (non-negative magnitudes), ties to the even code."""
    x = np.asarray(x, dtype=np.float64)
    mags = table[codes]
    diff = np.abs(np.abs(x)[..., None] - mags[None, :])
    best = diff.min(axis=-1, keepdims=True)
    cand = diff == best
    even = cand & ((codes % 2) == 0)[None, :]
    pick = np.where(even.any(axis=-1), np.argmax(even, axis=-1), np.argmax(cand, axis=-1))
    return codes[pick], np.signbit(x)


def to_e4m3(x):
    x = np.asarray(x, dtype=f32)
    c, neg = encode_nearest(np.clip(x, -448, 448).reshape(-1), E4M3, np.arange(0, 127))  # 0x00..0x7e
    return (c | np.where(neg, 0x80, 0)).astype(np.uint8).reshape(x.shape)


def to_e2m1(x):
    x = np.asarray(x, dtype=f32)
    c, neg = encode_nearest(np.clip(x, -6, 6).reshape(-1), E2M1, np.arange(0, 8))
    return (c | np.where(neg, 8, 0)).astype(np.uint8).reshape(x.shape)


# ---- formats: quantize -> (data, scales), dequantize -> float32 ----
def q8_0(w):
    b = w.reshape(N, K // 32, 32)
    amax = np.abs(b).max(axis=2)
    d = (amax / f32(127)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    q = roundf(b * idv[..., None]).astype(np.int8)
    blocks = np.zeros((N, K // 32, 34), dtype=np.uint8)
    blocks[..., :2] = fp16_bits(d)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    blocks[..., 2:] = q.view(np.uint8)
    deq = (fp16_val(fp16_bits(d))[..., None] * q.astype(f32)).astype(f32)
    return blocks.tobytes(), b"", deq.reshape(N, K)


def q4_0(w):
    b = w.reshape(N, K // 32, 32)
    idx = np.argmax(np.abs(b), axis=2)
    mx = np.take_along_axis(b, idx[..., None], axis=2)[..., 0]
    d = (mx / f32(-8)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    x0 = (b * idv[..., None]).astype(f32)
    q = np.minimum(15, np.trunc(x0 + f32(8.5)).astype(np.int32)).astype(np.uint8)
    blocks = np.zeros((N, K // 32, 18), dtype=np.uint8)
    blocks[..., :2] = fp16_bits(d)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    blocks[..., 2:] = q[..., :16] | (q[..., 16:] << 4)
    dd = fp16_val(fp16_bits(d))[..., None]
    deq = ((q.astype(np.int32) - 8).astype(f32) * dd).astype(f32)
    return blocks.tobytes(), b"", deq.reshape(N, K)


def q4_1(w):
    """ggml's quantize_row_q4_1_ref and block_q4_1 {fp16 d; fp16 m; uint8 qs[16]}: w = d q + m."""
    b = w.reshape(N, K // 32, 32)
    mn, mx = b.min(axis=2), b.max(axis=2)
    d = ((mx - mn) / f32(15)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    x0 = ((b - mn[..., None]).astype(f32) * idv[..., None]).astype(f32)
    q = np.minimum(15, np.trunc(x0 + f32(0.5)).astype(np.int32)).astype(np.uint8)
    blocks = np.zeros((N, K // 32, 20), dtype=np.uint8)
    blocks[..., :2] = fp16_bits(d)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    blocks[..., 2:4] = fp16_bits(mn)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    blocks[..., 4:] = q[..., :16] | (q[..., 16:] << 4)
    dd, mm = fp16_val(fp16_bits(d))[..., None], fp16_val(fp16_bits(mn))[..., None]
    deq = ((q.astype(f32) * dd).astype(f32) + mm).astype(f32)  # two roundings, no FMA
    return blocks.tobytes(), b"", deq.reshape(N, K)


def q5_0(w):
    """ggml's quantize_row_q5_0_ref and block_q5_0 {fp16 d; uint8 qh[4]; uint8 qs[16]}."""
    b = w.reshape(N, K // 32, 32)
    idx = np.argmax(np.abs(b), axis=2)
    mx = np.take_along_axis(b, idx[..., None], axis=2)[..., 0]
    d = (mx / f32(-16)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    x0 = (b * idv[..., None]).astype(f32)
    q = np.minimum(31, np.trunc(x0 + f32(16.5)).astype(np.int32)).astype(np.uint32)
    blocks = np.zeros((N, K // 32, 22), dtype=np.uint8)
    blocks[..., :2] = fp16_bits(d)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    qh = np.zeros((N, K // 32), dtype=np.uint32)
    for j in range(32):
        qh |= ((q[..., j] >> 4) & 1) << j
    blocks[..., 2:6] = qh[..., None].astype("<u4").view(np.uint8).reshape(N, K // 32, 4)
    blocks[..., 6:] = ((q[..., :16] & 15) | ((q[..., 16:] & 15) << 4)).astype(np.uint8)
    dd = fp16_val(fp16_bits(d))[..., None]
    deq = ((q.astype(np.int32) - 16).astype(f32) * dd).astype(f32)
    return blocks.tobytes(), b"", deq.reshape(N, K)


def q5_1(w):
    """ggml's quantize_row_q5_1_ref and block_q5_1 {fp16 d; fp16 m; uint8 qh[4]; uint8 qs[16]}:
    d = (max - min) / 31, q = (uint8)((x - min) / d + 0.5), w = d q + m."""
    b = w.reshape(N, K // 32, 32)
    mn, mx = b.min(axis=2), b.max(axis=2)
    d = ((mx - mn) / f32(31)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    x0 = ((b - mn[..., None]).astype(f32) * idv[..., None]).astype(f32)
    q = np.trunc(x0 + f32(0.5)).astype(np.uint32)
    blocks = np.zeros((N, K // 32, 24), dtype=np.uint8)
    blocks[..., :2] = fp16_bits(d)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    blocks[..., 2:4] = fp16_bits(mn)[..., None].view(np.uint8).reshape(N, K // 32, 2)
    qh = np.zeros((N, K // 32), dtype=np.uint32)
    for j in range(32):
        qh |= ((q[..., j] >> 4) & 1) << j
    blocks[..., 4:8] = qh[..., None].astype("<u4").view(np.uint8).reshape(N, K // 32, 4)
    blocks[..., 8:] = ((q[..., :16] & 15) | ((q[..., 16:] & 15) << 4)).astype(np.uint8)
    q = (q & 31).astype(f32)  # what the bytes hold
    dd, mm = fp16_val(fp16_bits(d))[..., None], fp16_val(fp16_bits(mn))[..., None]
    deq = ((q * dd).astype(f32) + mm).astype(f32)  # two roundings, no FMA
    return blocks.tobytes(), b"", deq.reshape(N, K)


def q4_k(w):
    nb = K // 256
    out = np.zeros((N, nb, 144), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(8, 32)
            mn = np.minimum(f32(0), x.min(axis=1))
            mx = np.maximum(x.max(axis=1), mn)
            scale = ((mx - mn) / f32(15)).astype(f32)
            mins = (f32(0) - mn).astype(f32)
            dh, mh = fp16_bits(scale.max() / f32(63)), fp16_bits(mins.max() / f32(63))
            df, mf = fp16_val(dh), fp16_val(mh)
            ls = np.minimum(f32(63), np.rint(scale / df)).astype(np.int32) if df > 0 else np.zeros(8, np.int32)
            lm = np.minimum(f32(63), np.rint(mins / mf)).astype(np.int32) if mf > 0 else np.zeros(8, np.int32)
            sc = np.zeros(12, dtype=np.int32)
            for j in range(8):
                if j < 4:
                    sc[j] = ls[j]
                    sc[j + 4] = lm[j]
                else:
                    sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
                    sc[j - 4] |= (ls[j] >> 4) << 6
                    sc[j] |= (lm[j] >> 4) << 6
            ds = (df * ls.astype(f32)).astype(f32)
            dm = (mf * lm.astype(f32)).astype(f32)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(ds[:, None] > 0, np.rint((x + dm[:, None]) / ds[:, None]), f32(0))
            L = np.clip(q, 0, 15).astype(np.int32).reshape(256)
            qs = np.zeros(128, dtype=np.int32)
            for c in range(4):
                qs[32 * c:32 * c + 32] = L[64 * c:64 * c + 32] | (L[64 * c + 32:64 * c + 64] << 4)
            out[r, bi, 0:2] = np.array([dh], dtype=np.uint16).view(np.uint8)
            out[r, bi, 2:4] = np.array([mh], dtype=np.uint16).view(np.uint8)
            out[r, bi, 4:16] = sc
            out[r, bi, 16:] = qs
            # Dequantize from the bytes as ggml's dequantize_row_q4_K does.
            def scale_min(j):
                if j < 4:
                    return sc[j] & 63, sc[j + 4] & 63
                return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)
            for c in range(4):
                for h in range(2):
                    s_, m_ = scale_min(2 * c + h)
                    d1, m1 = f32(df * f32(s_)), f32(mf * f32(m_))
                    nib = (qs[32 * c:32 * c + 32] >> (4 * h)) & 15
                    deq[r, bi, 64 * c + 32 * h:64 * c + 32 * h + 32] = (d1 * nib.astype(f32)).astype(f32) - m1
    return out.tobytes(), b"", deq.reshape(N, K)


def q6_k(w):
    nb = K // 256
    out = np.zeros((N, nb, 210), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(16, 16)
            scale = (np.abs(x).max(axis=1) / f32(31)).astype(f32)
            dh = fp16_bits(scale.max() / f32(127))
            df = fp16_val(dh)
            ls = np.minimum(f32(127), np.rint(scale / df)).astype(f32) if df > 0 else np.zeros(16, f32)
            ds = (df * ls).astype(f32)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(ds[:, None] > 0, np.rint(x / ds[:, None]), f32(0))
            L = (np.clip(q, -32, 31) + 32).astype(np.int32).reshape(256)
            ql = np.zeros(128, dtype=np.int32)
            qh = np.zeros(64, dtype=np.int32)
            for h in range(2):
                q_ = L[128 * h:128 * h + 128]
                for l in range(32):
                    ql[64 * h + l] = (q_[l] & 15) | ((q_[l + 64] & 15) << 4)
                    ql[64 * h + l + 32] = (q_[l + 32] & 15) | ((q_[l + 96] & 15) << 4)
                    qh[32 * h + l] = (q_[l] >> 4) | ((q_[l + 32] >> 4) << 2) | ((q_[l + 64] >> 4) << 4) | ((q_[l + 96] >> 4) << 6)
            out[r, bi, :128] = ql
            out[r, bi, 128:192] = qh
            out[r, bi, 192:208] = ls.astype(np.int8).view(np.uint8)
            out[r, bi, 208:210] = np.array([dh], dtype=np.uint16).view(np.uint8)
            # ggml's dequantize_row_q6_K, from the bytes.
            sc = out[r, bi, 192:208].view(np.int8)
            for h in range(2):
                for l in range(32):
                    is_ = l // 16
                    a, b_ = ql[64 * h + l], ql[64 * h + l + 32]
                    hh = qh[32 * h + l]
                    qv = [(a & 15) | (((hh >> 0) & 3) << 4), (b_ & 15) | (((hh >> 2) & 3) << 4),
                          (a >> 4) | (((hh >> 4) & 3) << 4), (b_ >> 4) | (((hh >> 6) & 3) << 4)]
                    for part in range(4):
                        dsc = f32(df * f32(sc[is_ + 2 * part + 8 * h]))
                        deq[r, bi, 128 * h + 32 * part + l] = f32(dsc * f32(qv[part] - 32))
    return out.tobytes(), b"", deq.reshape(N, K)


def q5_k(w):
    """Our round-to-nearest Q5_K (q4_k's with 31 levels) in block_q5_K {fp16 d, dmin;
    uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}, dequantized from the bytes as ggml's
    dequantize_row_q5_K does."""
    nb = K // 256
    out = np.zeros((N, nb, 176), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(8, 32)
            mn = np.minimum(f32(0), x.min(axis=1))
            mx = np.maximum(x.max(axis=1), mn)
            scale = ((mx - mn) / f32(31)).astype(f32)
            mins = (f32(0) - mn).astype(f32)
            dh, mh = fp16_bits(scale.max() / f32(63)), fp16_bits(mins.max() / f32(63))
            df, mf = fp16_val(dh), fp16_val(mh)
            ls = np.minimum(f32(63), np.rint(scale / df)).astype(np.int32) if df > 0 else np.zeros(8, np.int32)
            lm = np.minimum(f32(63), np.rint(mins / mf)).astype(np.int32) if mf > 0 else np.zeros(8, np.int32)
            sc = np.zeros(12, dtype=np.int32)
            for j in range(8):
                if j < 4:
                    sc[j] = ls[j]
                    sc[j + 4] = lm[j]
                else:
                    sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
                    sc[j - 4] |= (ls[j] >> 4) << 6
                    sc[j] |= (lm[j] >> 4) << 6
            ds = (df * ls.astype(f32)).astype(f32)
            dm = (mf * lm.astype(f32)).astype(f32)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(ds[:, None] > 0, np.rint((x + dm[:, None]) / ds[:, None]), f32(0))
            L = np.clip(q, 0, 31).astype(np.int32).reshape(256)
            qs = np.zeros(128, dtype=np.int32)
            qh = np.zeros(32, dtype=np.int32)
            for c in range(4):
                a, b_ = L[64 * c:64 * c + 32], L[64 * c + 32:64 * c + 64]
                qs[32 * c:32 * c + 32] = (a & 15) | ((b_ & 15) << 4)
                qh |= ((a >> 4) << (2 * c)) | ((b_ >> 4) << (2 * c + 1))
            out[r, bi, 0:2] = np.array([dh], dtype=np.uint16).view(np.uint8)
            out[r, bi, 2:4] = np.array([mh], dtype=np.uint16).view(np.uint8)
            out[r, bi, 4:16] = sc
            out[r, bi, 16:48] = qh
            out[r, bi, 48:] = qs

            def scale_min(j):
                if j < 4:
                    return sc[j] & 63, sc[j + 4] & 63
                return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)
            u1, u2 = 1, 2
            for c in range(4):
                for h, u in ((0, u1), (1, u2)):
                    s_, m_ = scale_min(2 * c + h)
                    d1, m1 = f32(df * f32(s_)), f32(mf * f32(m_))
                    v = ((qs[32 * c:32 * c + 32] >> (4 * h)) & 15) + np.where(qh & u, 16, 0)
                    deq[r, bi, 64 * c + 32 * h:64 * c + 32 * h + 32] = (d1 * v.astype(f32)).astype(f32) - m1
                u1, u2 = u1 << 2, u2 << 2
    return out.tobytes(), b"", deq.reshape(N, K)


# ggml's kvalues_iq4nl, the values of IQ4_NL's and IQ4_XS's 16 codes.
IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int32)


def q2_k(w):
    """Our round-to-nearest Q2_K in block_q2_K {uint8 scales[16]; uint8 qs[64]; fp16 d, dmin}:
    per sub-block of 16, scale (max - min) / 3, min 0 - min(x, 0); d, dmin = max / 15 (fp16);
    4-bit sc, m; q = clip(rint((x + dmin m) / (d sc)), 0, 3); dequantized as ggml's
    dequantize_row_q2_K, from the bytes."""
    nb = K // 256
    out = np.zeros((N, nb, 84), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(16, 16)
            mn = np.minimum(f32(0), x.min(axis=1))
            mx = np.maximum(x.max(axis=1), mn)
            scale = ((mx - mn) / f32(3)).astype(f32)
            mins = (f32(0) - mn).astype(f32)
            dh, mh = fp16_bits(scale.max() / f32(15)), fp16_bits(mins.max() / f32(15))
            df, mf = fp16_val(dh), fp16_val(mh)
            ls = np.minimum(f32(15), np.rint(scale / df)) if df > 0 else np.zeros(16, f32)
            lm = np.minimum(f32(15), np.rint(mins / mf)) if mf > 0 else np.zeros(16, f32)
            ds, dm = (df * ls.astype(f32)).astype(f32), (mf * lm.astype(f32)).astype(f32)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(ds[:, None] > 0, np.rint((x + dm[:, None]) / ds[:, None]), f32(0))
            L = np.clip(q, 0, 3).astype(np.int32).reshape(256)
            blk = out[r, bi]
            blk[:16] = (ls.astype(np.int32) | (lm.astype(np.int32) << 4)).astype(np.uint8)
            for e in range(256):
                h, j, l = e // 128, (e % 128) // 32, e % 32
                blk[16 + 32 * h + l] |= np.uint8(L[e] << (2 * j))
            blk[80:82] = np.array([dh], dtype=np.uint16).view(np.uint8)
            blk[82:84] = np.array([mh], dtype=np.uint16).view(np.uint8)
            # ggml's dequantize_row_q2_K, from the bytes.
            d, dmin = fp16_val(blk[80:82].view(np.uint16))[0], fp16_val(blk[82:84].view(np.uint16))[0]
            y, is_ = [], 0
            for n in range(2):
                qq = blk[16 + 32 * n:48 + 32 * n]
                for shift in (0, 2, 4, 6):
                    for half in range(2):
                        sc = int(blk[is_]); is_ += 1
                        dl, ml = f32(d * f32(sc & 15)), f32(dmin * f32(sc >> 4))
                        for l in range(16):
                            y.append(f32(f32(dl * f32((int(qq[16 * half + l]) >> shift) & 3)) - ml))
            deq[r, bi] = np.array(y, dtype=f32)
    return out.tobytes(), b"", deq.reshape(N, K)


def q3_k(w):
    """Our round-to-nearest Q3_K in block_q3_K {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12];
    fp16 d}: per sub-block of 16, scale = (value of largest magnitude) / -4; d = (scale of largest
    magnitude) / -32 (fp16); sc = clip(rint(scale / d), -32, 31) + 32 (6 bits);
    q = clip(rint(x / (d (sc - 32))), -4, 3) + 4; dequantized as ggml's
    dequantize_row_q3_K (its kmask unpacking of the scales), from the bytes."""
    nb = K // 256
    out = np.zeros((N, nb, 110), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(16, 16)
            scale = (signed_max(x) / f32(-4)).astype(f32)
            dh = fp16_bits(signed_max(scale) / f32(-32))
            df = fp16_val(dh)
            ls = np.clip(np.rint(scale / df), -32, 31).astype(f32) if df != 0 else np.zeros(16, f32)
            ds = (df * ls).astype(f32)
            with np.errstate(divide="ignore", invalid="ignore"):
                q = np.where(ds[:, None] != 0, np.rint(x / ds[:, None]), f32(0))
            L = (np.clip(q, -4, 3) + 4).astype(np.int32).reshape(256)
            blk = out[r, bi]
            for e in range(256):
                h, j, l = e // 128, (e % 128) // 32, e % 32
                blk[32 + 32 * h + l] |= np.uint8((L[e] & 3) << (2 * j))
                blk[l] |= np.uint8((L[e] >> 2) << (4 * h + j))
            u = ls.astype(np.int32) + 32
            sc = np.zeros(12, dtype=np.int32)
            for s_ in range(16):
                sc[s_ if s_ < 8 else s_ - 8] |= (u[s_] & 15) << (0 if s_ < 8 else 4)
                sc[8 + s_ % 4] |= (u[s_] >> 4) << (2 * (s_ // 4))
            blk[96:108] = sc.astype(np.uint8)
            blk[108:110] = np.array([dh], dtype=np.uint16).view(np.uint8)
            # ggml's dequantize_row_q3_K, from the bytes (aux words as it unpacks them).
            aux = blk[96:108].copy().view("<u4").astype(np.uint64)
            k1, k2 = 0x03030303, 0x0F0F0F0F
            tmp = int(aux[2])
            a0, a1 = int(aux[0]), int(aux[1])
            words = [(a0 & k2) | (((tmp >> 0) & k1) << 4), (a1 & k2) | (((tmp >> 2) & k1) << 4),
                     ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4), ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4)]
            scales = np.array(words, dtype="<u4").view(np.int8)
            d = fp16_val(blk[108:110].view(np.uint16))[0]
            hm = blk[:32]
            y, is_, m = [], 0, 1
            for n in range(2):
                qq = blk[32 + 32 * n:64 + 32 * n]
                for shift in (0, 2, 4, 6):
                    for half in range(2):
                        dl = f32(d * f32(int(scales[is_]) - 32)); is_ += 1
                        for l in range(16):
                            v = ((int(qq[16 * half + l]) >> shift) & 3) - (0 if int(hm[16 * half + l]) & m else 4)
                            y.append(f32(dl * f32(v)))
                    m <<= 1
            deq[r, bi] = np.array(y, dtype=f32)
    return out.tobytes(), b"", deq.reshape(N, K)


def iq4_index(v):
    """Index of the table value nearest v (float32 array), the lower index on ties."""
    err = np.abs(v.astype(np.float64)[..., None] - IQ4NL.astype(np.float64))
    return np.argmin(err, axis=-1).astype(np.int32)


def signed_max(x):
    """The value of largest magnitude along the last axis, the first on ties."""
    return np.take_along_axis(x, np.argmax(np.abs(x), axis=-1)[..., None], axis=-1)[..., 0]


def iq4_nl(w):
    """Our round-to-nearest IQ4_NL in block_iq4_nl {fp16 d; uint8 qs[16]}: d = fp16(max / -127),
    indices nearest x / d; dequantized as ggml's dequantize_row_iq4_nl."""
    b = w.reshape(N, K // 32, 32)
    dh = fp16_bits((signed_max(b) / f32(-127)).astype(f32))
    d = fp16_val(dh)
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.where(d[..., None] != 0, iq4_index((b / d[..., None]).astype(f32)), 8)
    qs = (idx[..., :16] | (idx[..., 16:] << 4)).astype(np.uint8)
    out = np.concatenate([dh[..., None].view(np.uint8).reshape(N, K // 32, 2), qs], axis=-1)
    deq = (d[..., None] * IQ4NL[idx].astype(f32)).astype(f32)
    return out.tobytes(), b"", deq.reshape(N, K)


def iq4_xs(w):
    """Our round-to-nearest IQ4_XS in block_iq4_xs {fp16 d; uint16 scales_h; uint8 scales_l[4];
    uint8 qs[128]}: per sub-block s = max / -127, d = fp16(-s_max / 32), l = clamp(rint(s / d),
    -32, 31), indices nearest x / (d l); dequantized as ggml's dequantize_row_iq4_xs."""
    nb = K // 256
    out = np.zeros((N, nb, 136), dtype=np.uint8)
    deq = np.zeros((N, nb, 256), dtype=f32)
    for r in range(N):
        for bi in range(nb):
            x = w[r, bi * 256:(bi + 1) * 256].reshape(8, 32)
            s = (signed_max(x) / f32(-127)).astype(f32)
            dh = fp16_bits(-signed_max(s) / f32(32))
            d = fp16_val(dh)
            lv = np.clip(np.rint(s / d), -32, 31).astype(np.int32) if d != 0 else np.zeros(8, np.int32)
            ls = lv + 32
            scales_h = 0
            scales_l = np.zeros(4, dtype=np.int32)
            qs = np.zeros(128, dtype=np.int32)
            for j in range(8):
                scales_l[j // 2] |= (ls[j] & 15) << (4 * (j % 2))
                scales_h |= int(ls[j] >> 4) << (2 * j)
                dl = f32(d * f32(lv[j]))
                with np.errstate(divide="ignore", invalid="ignore"):
                    idx = iq4_index((x[j] / dl).astype(f32)) if dl != 0 else np.full(32, 8, np.int32)
                qs[16 * j:16 * j + 16] = idx[:16] | (idx[16:] << 4)
            out[r, bi, 0:2] = np.array([dh], dtype=np.uint16).view(np.uint8)
            out[r, bi, 2:4] = np.array([scales_h], dtype=np.uint16).view(np.uint8)
            out[r, bi, 4:8] = scales_l
            out[r, bi, 8:] = qs
            # ggml's dequantize_row_iq4_xs, from the bytes.
            for ib in range(8):
                l_ = ((scales_l[ib // 2] >> (4 * (ib % 2))) & 15) | (((scales_h >> (2 * ib)) & 3) << 4)
                dl = f32(d * f32(l_ - 32))
                q = qs[16 * ib:16 * ib + 16]
                deq[r, bi, 32 * ib:32 * ib + 16] = dl * IQ4NL[q & 15].astype(f32)
                deq[r, bi, 32 * ib + 16:32 * ib + 32] = dl * IQ4NL[q >> 4].astype(f32)
    return out.tobytes(), b"", deq.reshape(N, K)


def int8(w):
    s = (np.abs(w).max(axis=1) / f32(127)).astype(f32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s[:, None] > 0, np.clip(np.rint(w / s[:, None]), -127, 127), f32(0)).astype(np.int8)
    deq = (s[:, None] * q.astype(f32)).astype(f32)
    return q.view(np.uint8).tobytes(), s.astype("<f4").tobytes(), deq


def int4(w, G, zp):
    g = w.reshape(N, K // G, G)
    mn = np.minimum(f32(0), g.min(axis=2))
    mx = np.maximum(f32(0), g.max(axis=2))
    amax = np.abs(g).max(axis=2)
    if zp:
        sh = fp16_bits(np.maximum(mx - mn, f32(1e-5)) / f32(15))
    else:
        sh = fp16_bits(amax / f32(7))
    s = fp16_val(sh)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(s[..., None] > 0, np.rint(g / s[..., None]), f32(0))
        if zp:
            z = np.where(s > 0, np.clip(np.rint(-mn / s), 0, 15), f32(0)).astype(np.int32)
            u = np.clip(u + z[..., None], 0, 15)
        else:
            z = np.full(s.shape, 8, dtype=np.int32)
            u = np.clip(u, -8, 7) + 8
    u = u.astype(np.uint8).reshape(N, K)
    data = (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)
    scales = sh.astype("<u2").tobytes() + (z.astype(np.uint8).tobytes() if zp else b"")
    deq = (s[..., None] * (u.reshape(N, K // G, G).astype(np.int32) - z[..., None]).astype(f32)).astype(f32)
    return data.tobytes(), scales, deq.reshape(N, K)


def fp8(w):
    tn, tk = -(-N // 128), -(-K // 128)
    scales = np.zeros((tn, tk), dtype=f32)
    codes = np.zeros((N, K), dtype=np.uint8)
    for bi in range(tn):
        for bj in range(tk):
            blk = w[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            s = f32(np.abs(blk).max() / f32(448))
            scales[bi, bj] = s
            if s > 0:
                codes[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128] = to_e4m3((blk / s).astype(f32))
    srow = np.repeat(np.repeat(scales, 128, axis=0), 128, axis=1)[:N, :K]
    deq = (E4M3[codes].astype(f32) * srow).astype(f32)
    return codes.tobytes(), scales.astype("<f4").tobytes(), deq


def mxfp4(w):
    b = w.reshape(N, K // 32, 32)
    amax = np.abs(b).max(axis=2)
    _, e = np.frexp(np.where(amax > 0, amax, f32(1)))
    X = np.where(amax > 0, np.clip(e - 1 - 2, -127, 127), -127).astype(np.int32)
    scale_bytes = (X + 127).astype(np.uint8)
    codes = to_e2m1((b * np.ldexp(f32(1), -X)[..., None].astype(f32)).astype(f32))
    flat = codes.reshape(N, K)
    data = (flat[:, 0::2] | (flat[:, 1::2] << 4)).astype(np.uint8)
    deq = (E2M1[flat].astype(f32) * np.repeat(np.ldexp(np.float64(1), X), 32, axis=1).astype(f32)
           ).astype(f32)
    return data.tobytes(), scale_bytes.tobytes(), deq


def mxfp4_dot(w):
    """mxfp4's OCP MX codes and scales in ggml's block_mxfp4 {uint8 e; uint8 qs[16]}, q4_0's
    nibble order (qs[j]: element j low, j + 16 high); dequantized as ggml's
    dequantize_row_mxfp4: kvalues_mxfp4[q] (2 * e2m1) * 2^(e - 128)."""
    b = w.reshape(N, K // 32, 32)
    amax = np.abs(b).max(axis=2)
    _, e = np.frexp(np.where(amax > 0, amax, f32(1)))
    X = np.where(amax > 0, np.clip(e - 1 - 2, -127, 127), -127).astype(np.int32)
    codes = to_e2m1((b * np.ldexp(f32(1), -X)[..., None].astype(f32)).astype(f32)).astype(np.uint8)
    qs = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
    out = np.concatenate([(X + 127).astype(np.uint8)[..., None], qs], axis=-1)
    kvalues = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float64)
    deq = (kvalues[codes] * np.ldexp(np.float64(1), (X + 127) - 128)[..., None]).astype(f32)
    return out.tobytes(), b"", deq.reshape(N, K)


def bf16(w):
    """Nearest bf16 by comparing the two neighbours (truncation and the next code up) in
    float64, ties to the even code: not the integer-add trick the C++ uses."""
    u = w.astype(f32).view(np.uint32)
    lo = (u & 0xFFFF0000).astype(np.uint32)
    hi = (lo + 0x10000).astype(np.uint32)
    vlo = lo.view(f32).astype(np.float64)
    vhi = hi.view(f32).astype(np.float64)
    x = w.astype(np.float64)
    dlo, dhi = np.abs(x - vlo), np.abs(vhi - x)
    even_hi = ((hi >> 16) & 1) == 0
    pick_hi = (dhi < dlo) | ((dhi == dlo) & even_hi)
    code = (np.where(pick_hi, hi, lo) >> 16).astype("<u2")
    deq = (code.astype(np.uint32) << 16).view(f32)
    return code.tobytes(), b"", deq


FORMATS = {
    "q8_0": q8_0, "q4_0": q4_0, "q4_1": q4_1, "q5_0": q5_0, "q5_1": q5_1, "q4_k": q4_k, "q5_k": q5_k, "q6_k": q6_k,
    "q2_k": q2_k, "q3_k": q3_k, "iq4_nl": iq4_nl, "iq4_xs": iq4_xs, "int8": int8,
    "int4_32": lambda w: int4(w, 32, False), "int4_128_zp": lambda w: int4(w, 128, True),
    "fp8": fp8, "mxfp4": mxfp4, "mxfp4_dot": mxfp4_dot, "bf16": bf16,
}


def main():
    os.makedirs(OUT, exist_ok=True)
    w = make_weights()
    w.astype("<f4").tofile(os.path.join(OUT, "w.f32"))
    for name, fn in FORMATS.items():
        data, scales, deq = fn(w)
        with open(os.path.join(OUT, name + ".data.bin"), "wb") as f:
            f.write(data)
        with open(os.path.join(OUT, name + ".scales.bin"), "wb") as f:
            f.write(scales)
        np.asarray(deq, dtype="<f4").tofile(os.path.join(OUT, name + ".deq.f32"))
        err = np.abs(deq - w).max() / np.abs(w).max()
        print(f"{name:12s} data {len(data):6d} B  scales {len(scales):5d} B  max err / max|w| {err:.4f}")


if __name__ == "__main__":
    main()
