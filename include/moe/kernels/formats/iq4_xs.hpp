/// @file kernels/formats/iq4_xs.hpp
/// GGUF IQ4_XS: super-blocks of 256 values along K, 136 bytes (`{ fp16 d; uint16 scales_h;
/// uint8 scales_l[4]; uint8 qs[128]; }`): 8 sub-blocks of 32, sub-block j's 6-bit scale ls_j is
/// its low nibble (`scales_l[j / 2] >> 4 (j % 2)`) and 2 high bits (`scales_h >> 2 j`); qs[16 j + l]
/// holds element 32 j + l (low nibble) and 32 j + 16 + l (high nibble), indices into IQ4_NL's
/// table: w = d * (ls_j - 32) * kvalues_iq4nl[q] (ggml's dequantize_row_iq4_xs). Packed as 4-bit
/// indices looked up in registers. Activations: int8 per super-block of 256, sums per 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"
#include "iq4_nl.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct iq4_xs {
    static constexpr const char* name = "iq4_xs";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 23;
    static constexpr bool integer = true;
    /// Codes carry +128; the activation sums come pre-scaled by -128 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 128;
    static constexpr unsigned bits = 4;
    static constexpr std::size_t block = 256, block_bytes = 136;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return 32; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols + 8 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// Sub-block j's signed scale ls_j - 32, in [-32, 31].
    static int sub_scale(const std::uint8_t* p, std::size_t j) noexcept {
        const unsigned lo = (p[4 + j / 2] >> (4 * (j % 2))) & 15u, hi = (detail::load_u16(p + 2) >> (2 * j)) & 3u;
        return static_cast<int>(lo | (hi << 4)) - 32;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
    }
    /// Round-to-nearest reference quantizer (ours; ggml's also searches the scales): per
    /// sub-block s_j = max_j / -127 (max_j: its value of largest magnitude, the first on ties);
    /// d = fp16(-s / 32) for the s_j of largest magnitude (the first on ties); l_j =
    /// clamp(round(s_j / d), -32, 31) (half to even); each value the table index nearest
    /// x / (d l_j) (ties to the lower index; index 8 when d l_j = 0).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, block);
        detail::check_finite(name, w, n, k);
        quant_matrix mat{n, k, p, std::vector<std::uint8_t>(n * (k / block) * block_bytes), {}};
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t b = 0; b < k / block; ++b) {
                const float* x = w + r * k + b * block;
                std::uint8_t* out = mat.data.data() + (r * (k / block) + b) * block_bytes;
                float s[8];
                for (std::size_t j = 0; j < 8; ++j) s[j] = detail::signed_absmax(x + 32 * j, 32) / -127.0f;
                const float smax = detail::signed_absmax(s, 8);
                const std::uint16_t dh = detail::float_to_fp16(-smax / 32.0f);
                const float d = detail::fp16_to_float(dh);
                detail::store_u16(out, dh);
                unsigned scales_h = 0;
                for (std::size_t j = 0; j < 8; ++j) {
                    const int l = d != 0.0f ? static_cast<int>(std::min(31.0f, std::max(-32.0f, detail::round_even(s[j] / d)))) : 0;
                    const unsigned ls = static_cast<unsigned>(l + 32);
                    out[4 + j / 2] = static_cast<std::uint8_t>(out[4 + j / 2] | ((ls & 15u) << (4 * (j % 2))));
                    scales_h |= (ls >> 4) << (2 * j);
                    const float dl = detail::barrier(d * static_cast<float>(l));
                    auto index = [dl](float v) { return dl != 0.0f ? detail::iq4nl_nearest(v / dl) : 8u; };
                    for (std::size_t e = 0; e < 16; ++e)
                        out[8 + 16 * j + e] = static_cast<std::uint8_t>(index(x[32 * j + e]) | (index(x[32 * j + 16 + e]) << 4));
                }
                detail::store_u16(out + 2, static_cast<std::uint16_t>(scales_h));
            }
        return mat;
    }
    /// ggml's dequantize_row_iq4_xs: y = (d (ls - 32)) kvalues_iq4nl[q].
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p));
                float* y = out + r * v.cols + b * block;
                for (std::size_t j = 0; j < 8; ++j) {
                    const float dl = detail::barrier(d * static_cast<float>(sub_scale(p, j)));
                    for (std::size_t e = 0; e < 16; ++e) {
                        y[32 * j + e] = dl * static_cast<float>(detail::iq4nl_values[p[8 + 16 * j + e] & 15]);
                        y[32 * j + 16 + e] = dl * static_cast<float>(detail::iq4nl_values[p[8 + 16 * j + e] >> 4]);
                    }
                }
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        for (std::size_t j = 0; j < 8; ++j) {
            scales[2 * panel_cols + panel_cols * j + col] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sub_scale(p, j)));
            for (std::size_t e = 0; e < 16; ++e) {
                codes[32 * j + e] = p[8 + 16 * j + e] & 15;
                codes[32 * j + 16 + e] = p[8 + 16 * j + e] >> 4;
            }
        }
    }
    /// i = sum_j (ls_j - 32) (dot_j(v + 128, a) - 128 sum_j(a)) (exact); acc = fma(d d_a, i, acc).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        const std::uint8_t* s = sb + detail::code_bytes(bits, block);
        const typename L::B tab = L::table16(detail::iq4nl_codes);
        typename L::I i1[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { i1[i] = L::zero(); });
        for (std::size_t j = 0; j < 8; ++j) {
            typename L::I isum[M];
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
                isum[i] = L::splat(as + j * mr + i);
            });  // -offset x sum a
            detail::dot4_lut<L, M>(sb, 8 * j, 8, tab, aq, mr, isum);
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
