/// @file kernels/formats/q5_k.hpp
/// GGUF Q5_K: super-blocks of 256 values along K, 176 bytes (`{ fp16 d; fp16 dmin;
/// uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }`): Q4_K's 8 sub-blocks of 32 with 6-bit
/// scales sc and mins m, w = d * sc * q - dmin * m, q in [0, 31]: qs[32 c + l] holds the low
/// 4 bits of element 64 c + l (low nibble) and 64 c + 32 + l (high nibble), bit 2c of qh[l]
/// bit 4 of the first, bit 2c + 1 that of the second (ggml's dequantize_row_q5_K). Packed as
/// 6-bit codes (bit 5 zero: the panel's 6-bit layout). Activations: int8 per super-block of
/// 256 (as ggml's q8_K), with sums per 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common.hpp"
#include "panel.hpp"
#include "q4_k.hpp"

namespace moe::kernels::formats {

struct q5_k {
    static constexpr const char* name = "q5_k";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 13;
    static constexpr bool integer = true;
    static constexpr unsigned bits = 6;  ///< the panel's code width (5-bit values, bit 5 zero)
    static constexpr std::size_t block = 256, block_bytes = 176;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return 32; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 4 * panel_cols + 16 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// Element e (0..255) of a super-block: its 5-bit code.
    static unsigned code(const std::uint8_t* p, std::size_t e) noexcept {
        const std::size_t c = e / 64, h = (e % 64) / 32, l = e % 32;
        const unsigned low = h == 0 ? p[48 + 32 * c + l] & 15u : p[48 + 32 * c + l] >> 4;
        return low | (((p[16 + l] >> (2 * c + h)) & 1u) << 4);
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(p)), r, b);
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(p + 2)), r, b);
            }
    }
    /// Round-to-nearest reference quantizer (ours; ggml's searches for the scales instead), Q4_K's
    /// with 31 levels: per sub-block, scale = (max - min) / 31 and min = 0 - min(x, 0); d = max
    /// scale / 63 and dmin = max min / 63 (stored fp16); 6-bit sc, m = round(scale / d),
    /// round(min / dmin); q = clamp(round((x + dmin m) / (d sc)), 0, 31). Rounding: half to even.
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
                float scale[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
                for (std::size_t j = 0; j < 8; ++j) {
                    float mn = 0.0f, mx = x[32 * j];
                    for (std::size_t l = 0; l < 32; ++l) {
                        mn = std::min(mn, x[32 * j + l]);
                        mx = std::max(mx, x[32 * j + l]);
                    }
                    mx = std::max(mx, mn);
                    scale[j] = (mx - mn) / 31.0f;
                    mins[j] = 0.0f - mn;  // +0 when mn = 0
                    max_scale = std::max(max_scale, scale[j]);
                    max_min = std::max(max_min, mins[j]);
                }
                const std::uint16_t dh = detail::float_to_fp16(max_scale / 63.0f), mh = detail::float_to_fp16(max_min / 63.0f);
                const float df = detail::fp16_to_float(dh), mf = detail::fp16_to_float(mh);
                detail::store_u16(out, dh);
                detail::store_u16(out + 2, mh);
                std::uint8_t* sc = out + 4;
                std::uint8_t* qh = out + 16;
                std::uint8_t* qs = out + 48;
                std::fill(sc, sc + 12 + 32, std::uint8_t(0));
                unsigned L[256];
                for (std::size_t j = 0; j < 8; ++j) {
                    const unsigned ls = df > 0.0f ? static_cast<unsigned>(std::min(63.0f, round_even(scale[j] / df))) : 0u;
                    const unsigned lm = mf > 0.0f ? static_cast<unsigned>(std::min(63.0f, round_even(mins[j] / mf))) : 0u;
                    if (j < 4) {
                        sc[j] = static_cast<std::uint8_t>(ls);
                        sc[j + 4] = static_cast<std::uint8_t>(lm);
                    } else {
                        sc[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
                        sc[j - 4] = static_cast<std::uint8_t>(sc[j - 4] | ((ls >> 4) << 6));
                        sc[j] = static_cast<std::uint8_t>(sc[j] | ((lm >> 4) << 6));
                    }
                    const float ds = barrier(df * static_cast<float>(ls)), dm = barrier(mf * static_cast<float>(lm));
                    for (std::size_t l = 0; l < 32; ++l) {
                        const float q = ds > 0.0f ? round_even((x[32 * j + l] + dm) / ds) : 0.0f;
                        L[32 * j + l] = static_cast<unsigned>(std::min(31.0f, std::max(0.0f, q)));
                    }
                }
                for (std::size_t c = 0; c < 4; ++c)
                    for (std::size_t l = 0; l < 32; ++l) {
                        const unsigned q0 = L[64 * c + l], q1 = L[64 * c + 32 + l];
                        qs[32 * c + l] = static_cast<std::uint8_t>((q0 & 15) | ((q1 & 15) << 4));
                        qh[l] = static_cast<std::uint8_t>(qh[l] | ((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1)));
                    }
            }
        return mat;
    }
    /// ggml's dequantize_row_q5_K: y = (d sc) q - (dmin m).
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p)), dmin = detail::fp16_to_float(detail::load_u16(p + 2));
                float* y = out + r * v.cols + b * block;
                for (std::size_t j = 0; j < 8; ++j) {
                    unsigned sc, m;
                    q4_k::scale_min(p + 4, j, sc, m);
                    using detail::barrier;
                    const float dj = barrier(d * static_cast<float>(sc)), oj = barrier(dmin * static_cast<float>(m));
                    for (std::size_t l = 0; l < 32; ++l)
                        y[32 * j + l] = barrier(dj * static_cast<float>(code(p, 32 * j + l))) - oj;
                }
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        std::memcpy(scales + 2 * panel_cols + 2 * col, p + 2, 2);
        for (std::size_t j = 0; j < 8; ++j) {
            unsigned sc, m;
            q4_k::scale_min(p + 4, j, sc, m);
            scales[4 * panel_cols + panel_cols * j + col] = static_cast<std::uint8_t>(sc);
            scales[12 * panel_cols + panel_cols * j + col] = static_cast<std::uint8_t>(m);
        }
        for (std::size_t e = 0; e < block; ++e) codes[e] = static_cast<std::uint8_t>(code(p, e));
    }
    /// Q4_K's step over 6-bit codes: i1 = sum_j sc_j dot_j(q, a), i2 = sum_j m_j sum_j(a)
    /// (exact); acc = fma(d d_a, i1, acc), then acc = fma(-(dmin d_a), i2, acc).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        const std::uint8_t* s = sb + detail::code_bytes(bits, block);
        typename L::I i1[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::zero(); });
        for (std::size_t j = 0; j < 8; ++j) {
            typename L::I isum[M];
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::zero(); });
            detail::dot6<L, M>(sb, block, 8 * j, 8, aq, mr, isum);
            const typename L::I scv = L::u8x16(s + 4 * panel_cols + panel_cols * j);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::add(i1[i], L::mullo(scv, isum[i])); });
        }
        const typename L::F d = L::fp16x16(s), dmin = L::fp16x16(s + 2 * panel_cols);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(d, L::bcast(ad[i])), L::cvt(i1[i]), acc[i]);
        });
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            typename L::I i2 = L::zero();
            for (std::size_t j = 0; j < 8; ++j)
                i2 = L::add(i2, L::mul_scalar(L::u8x16(s + 12 * panel_cols + panel_cols * j), as[j * mr + i]));
            acc[i] = L::fma(L::neg(L::mul(dmin, L::bcast(ad[i]))), L::cvt(i2), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
