/// @file kernels/formats/q3_k.hpp
/// GGUF Q3_K: super-blocks of 256 values along K, 110 bytes (`{ uint8 hmask[32]; uint8 qs[64];
/// uint8 scales[12]; fp16 d; }`): 16 sub-blocks of 16 with 6-bit scales sc (sub-block s: low
/// nibble `scales[s] & 15` for s < 8, `scales[s - 8] >> 4` above; high 2 bits
/// `scales[8 + s % 4] >> 2 (s / 4)`), w = d * (sc - 32) * (q - 4), q in [0, 7]: element e of half
/// h = e / 128 takes its low 2 bits from bits 2 j .. 2 j + 1 of qs[32 h + l] and its bit 2 from
/// bit 4 h + j of hmask[l] (j = (e % 128) / 32, l = e % 32); its sub-block is e / 16 (ggml's
/// dequantize_row_q3_K). Packed as 3-bit panel codes. Activations: int8 per super-block of 256
/// (as ggml's q8_K), with sums per 16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q3_k {
    static constexpr const char* name = "q3_k";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 11;
    static constexpr bool integer = true;
    /// Codes carry +4; the activation sums come pre-scaled by -4 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 4;
    static constexpr unsigned bits = 3;  ///< the panel's 3-bit code layout
    static constexpr std::size_t block = 256, block_bytes = 110;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return 16; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols + 16 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// Element e (0..255) of a super-block: its 3-bit code.
    static unsigned code(const std::uint8_t* p, std::size_t e) noexcept {
        const std::size_t h = e / 128, j = (e % 128) / 32, l = e % 32;
        return ((p[32 + 32 * h + l] >> (2 * j)) & 3u) | (((p[l] >> (4 * h + j)) & 1u) << 2);
    }
    /// Sub-block s's signed scale sc - 32, in [-32, 31].
    static int sub_scale(const std::uint8_t* p, std::size_t s) noexcept {
        const std::uint8_t* sc = p + 96;
        const unsigned lo = s < 8 ? sc[s] & 15u : sc[s - 8] >> 4u, hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3u;
        return static_cast<int>(lo | (hi << 4)) - 32;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b) + 108)), r, b);
    }
    /// Round-to-nearest reference quantizer (ours; ggml's make_q3_quants without its search):
    /// per sub-block of 16, scale = max / -4 (max: the value of largest magnitude, the first on
    /// ties, so it lands on code -4); d = fp16(M / -32), M the scale of largest magnitude;
    /// sc = clamp(round(scale / d), -32, 31), stored + 32; q = clamp(round(x / (d sc)), -4, 3) + 4.
    /// Half to even.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, block);
        detail::check_finite(name, w, n, k);
        quant_matrix mat{n, k, p, std::vector<std::uint8_t>(n * (k / block) * block_bytes), {}};
        using detail::round_even;
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t b = 0; b < k / block; ++b) {
                const float* x = w + r * k + b * block;
                std::uint8_t* out = mat.data.data() + (r * (k / block) + b) * block_bytes;
                float scale[16];
                for (std::size_t s = 0; s < 16; ++s) scale[s] = detail::signed_absmax(x + 16 * s, 16) / -4.0f;
                const std::uint16_t dh = detail::float_to_fp16(detail::signed_absmax(scale, 16) / -32.0f);
                const float df = detail::fp16_to_float(dh);
                std::fill(out, out + 108, std::uint8_t(0));
                detail::store_u16(out + 108, dh);
                std::uint8_t* sc = out + 96;
                for (std::size_t s = 0; s < 16; ++s) {
                    const float ls = df != 0.0f ? std::min(31.0f, std::max(-32.0f, round_even(scale[s] / df))) : 0.0f;
                    const unsigned u = static_cast<unsigned>(static_cast<int>(ls) + 32);
                    sc[s < 8 ? s : s - 8] = static_cast<std::uint8_t>(sc[s < 8 ? s : s - 8] | ((u & 15u) << (s < 8 ? 0 : 4)));
                    sc[8 + s % 4] = static_cast<std::uint8_t>(sc[8 + s % 4] | ((u >> 4) << (2 * (s / 4))));
                    const float ds = detail::barrier(df * ls);
                    for (std::size_t l = 0; l < 16; ++l) {
                        const std::size_t e = 16 * s + l, h = e / 128, j = (e % 128) / 32, i = e % 32;
                        const float q = ds != 0.0f ? round_even(x[e] / ds) : 0.0f;
                        const unsigned qi = static_cast<unsigned>(std::min(3.0f, std::max(-4.0f, q)) + 4.0f);
                        out[32 + 32 * h + i] = static_cast<std::uint8_t>(out[32 + 32 * h + i] | ((qi & 3u) << (2 * j)));
                        out[i] = static_cast<std::uint8_t>(out[i] | ((qi >> 2) << (4 * h + j)));
                    }
                }
            }
        return mat;
    }
    /// ggml's dequantize_row_q3_K: y = (d (sc - 32)) (q - 4).
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p + 108));
                for (std::size_t e = 0; e < block; ++e) {
                    const float ds = detail::barrier(d * static_cast<float>(sub_scale(p, e / 16)));
                    out[r * v.cols + b * block + e] = ds * static_cast<float>(static_cast<int>(code(p, e)) - 4);
                }
            }
    }
    /// Panel scales: d (fp16), then the 16 signed scales sc - 32 (int8).
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p + 108, 2);
        for (std::size_t s = 0; s < 16; ++s)
            scales[2 * panel_cols + panel_cols * s + col] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sub_scale(p, s)));
        for (std::size_t e = 0; e < block; ++e) codes[e] = static_cast<std::uint8_t>(code(p, e));
    }
    /// i = sum_s (sc_s - 32) (dot_s(q, a) - 4 sum_s(a)) (exact); acc = fma(d d_a, i, acc).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        const std::uint8_t* s = sb + detail::code_bytes(bits, block);
        typename L::I i1[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::zero(); });
        for (std::size_t j = 0; j < 16; ++j) {
            typename L::I isum[M];
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                isum[i] = L::splat(as + j * mr + i);
            });  // -offset x sum a
            detail::dot3<L, M>(sb, block, 4 * j, 4, aq, mr, isum);
            const typename L::I scv = L::s8x16(s + 2 * panel_cols + panel_cols * j);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::add(i1[i], L::mullo(scv, isum[i])); });
        }
        const typename L::F d = L::fp16x16(s);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(d, L::bcast(ad[i])), L::cvt(i1[i]), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
