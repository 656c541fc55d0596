/// @file kernels/formats/q2_k.hpp
/// GGUF Q2_K: super-blocks of 256 values along K, 84 bytes (`{ uint8 scales[16]; uint8 qs[64];
/// fp16 d; fp16 dmin; }`): 16 sub-blocks of 16, sub-block s's 4-bit scale sc (low nibble of
/// scales[s]) and min m (high nibble), w = d * sc * q - dmin * m, q in [0, 3]: element e of half
/// h = e / 128 is bits 2 j .. 2 j + 1 of qs[32 h + l] (j = (e % 128) / 32, l = e % 32), and its
/// sub-block is 8 h + 2 j + l / 16 (ggml's dequantize_row_q2_K). Packed as 2-bit panel codes.
/// Activations: int8 per super-block of 256 (as ggml's q8_K), with sums per 16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q2_k {
    static constexpr const char* name = "q2_k";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 10;
    static constexpr bool integer = true;
    static constexpr unsigned bits = 2;  ///< the panel's 2-bit code layout
    static constexpr std::size_t block = 256, block_bytes = 84;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return 16; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 4 * panel_cols + 32 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// Element e (0..255) of a super-block: its 2-bit code.
    static unsigned code(const std::uint8_t* p, std::size_t e) noexcept {
        const std::size_t h = e / 128, j = (e % 128) / 32, l = e % 32;
        return (p[16 + 32 * h + l] >> (2 * j)) & 3u;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(p + 80)), r, b);
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(p + 82)), r, b);
            }
    }
    /// Round-to-nearest reference quantizer (ours; ggml's searches for the scales instead):
    /// per sub-block of 16, scale = (max - min) / 3 and min = 0 - min(x, 0); d = max scale / 15
    /// and dmin = max min / 15 (stored fp16); 4-bit sc, m = round(scale / d), round(min / dmin);
    /// q = clamp(round((x + dmin m) / (d sc)), 0, 3). Rounding: half to even.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, block);
        detail::check_finite(name, w, n, k);
        quant_matrix mat{n, k, p, std::vector<std::uint8_t>(n * (k / block) * block_bytes), {}};
        using detail::barrier;
        using detail::round_even;
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t b = 0; b < k / block; ++b) {
                const float* x = w + r * k + b * block;
                std::uint8_t* out = mat.data.data() + (r * (k / block) + b) * block_bytes;
                float scale[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
                for (std::size_t s = 0; s < 16; ++s) {
                    float mn = 0.0f, mx = x[16 * s];
                    for (std::size_t l = 0; l < 16; ++l) {
                        mn = std::min(mn, x[16 * s + l]);
                        mx = std::max(mx, x[16 * s + l]);
                    }
                    mx = std::max(mx, mn);
                    scale[s] = (mx - mn) / 3.0f;
                    mins[s] = 0.0f - mn;  // +0 when mn = 0
                    max_scale = std::max(max_scale, scale[s]);
                    max_min = std::max(max_min, mins[s]);
                }
                const std::uint16_t dh = detail::float_to_fp16(max_scale / 15.0f), mh = detail::float_to_fp16(max_min / 15.0f);
                const float df = detail::fp16_to_float(dh), mf = detail::fp16_to_float(mh);
                detail::store_u16(out + 80, dh);
                detail::store_u16(out + 82, mh);
                std::fill(out, out + 80, std::uint8_t(0));
                for (std::size_t s = 0; s < 16; ++s) {
                    const unsigned ls = df > 0.0f ? static_cast<unsigned>(std::min(15.0f, round_even(scale[s] / df))) : 0u;
                    const unsigned lm = mf > 0.0f ? static_cast<unsigned>(std::min(15.0f, round_even(mins[s] / mf))) : 0u;
                    out[s] = static_cast<std::uint8_t>(ls | (lm << 4));
                    const float ds = barrier(df * static_cast<float>(ls)), dm = barrier(mf * static_cast<float>(lm));
                    for (std::size_t l = 0; l < 16; ++l) {
                        const std::size_t e = 16 * s + l, h = e / 128, j = (e % 128) / 32, i = e % 32;
                        const float q = ds > 0.0f ? round_even((x[e] + dm) / ds) : 0.0f;
                        const unsigned qi = static_cast<unsigned>(std::min(3.0f, std::max(0.0f, q)));
                        out[16 + 32 * h + i] = static_cast<std::uint8_t>(out[16 + 32 * h + i] | (qi << (2 * j)));
                    }
                }
            }
        return mat;
    }
    /// ggml's dequantize_row_q2_K: y = (d sc) q - (dmin m).
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p + 80)), dmin = detail::fp16_to_float(detail::load_u16(p + 82));
                float* y = out + r * v.cols + b * block;
                for (std::size_t e = 0; e < block; ++e) {
                    const std::size_t s = 8 * (e / 128) + 2 * ((e % 128) / 32) + (e % 32) / 16;
                    using detail::barrier;
                    const float ds = barrier(d * static_cast<float>(p[s] & 15u)), dm = barrier(dmin * static_cast<float>(p[s] >> 4));
                    y[e] = barrier(ds * static_cast<float>(code(p, e))) - dm;
                }
            }
    }
    /// Panel scales: d, dmin (fp16), then sc and m of sub-blocks in element order (16 each).
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p + 80, 2);
        std::memcpy(scales + 2 * panel_cols + 2 * col, p + 82, 2);
        for (std::size_t e = 0; e < block; e += 16) {
            const std::size_t s = 8 * (e / 128) + 2 * ((e % 128) / 32) + (e % 32) / 16;
            scales[4 * panel_cols + panel_cols * (e / 16) + col] = p[s] & 15u;
            scales[20 * panel_cols + panel_cols * (e / 16) + col] = p[s] >> 4;
        }
        for (std::size_t e = 0; e < block; ++e) codes[e] = static_cast<std::uint8_t>(code(p, e));
    }
    /// i1 = sum_s sc_s dot_s(q, a), i2 = sum_s m_s sum_s(a) over the 16 sub-blocks (exact);
    /// acc = fma(d d_a, i1, acc), then acc = fma(-(dmin d_a), i2, acc).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        const std::uint8_t* s = sb + detail::code_bytes(bits, block);
        typename L::I i1[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::zero(); });
        for (std::size_t j = 0; j < 16; ++j) {
            typename L::I isum[M];
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::zero(); });
            detail::dot2<L, M>(sb, 4 * j, 4, aq, mr, isum);
            const typename L::I scv = L::u8x16(s + 4 * panel_cols + panel_cols * j);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::add(i1[i], L::mullo(scv, isum[i])); });
        }
        const typename L::F d = L::fp16x16(s), dmin = L::fp16x16(s + 2 * panel_cols);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(d, L::bcast(ad[i])), L::cvt(i1[i]), acc[i]);
        });
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            typename L::I i2 = L::zero();
            for (std::size_t j = 0; j < 16; ++j)
                i2 = L::add(i2, L::mul_scalar(L::u8x16(s + 20 * panel_cols + panel_cols * j), as[j * mr + i]));
            acc[i] = L::fma(L::neg(L::mul(dmin, L::bcast(ad[i]))), L::cvt(i2), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
