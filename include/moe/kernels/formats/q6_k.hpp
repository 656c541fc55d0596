/// @file kernels/formats/q6_k.hpp
/// GGUF Q6_K: super-blocks of 256 values along K, 210 bytes (`{ uint8 ql[128]; uint8 qh[64];
/// int8 scales[16]; fp16 d; }`): 16 sub-blocks of 16 with int8 scales, w = d * sc * (q - 32),
/// q in [0, 63] split into 4 low bits (ql) and 2 high bits (qh) as ggml lays them out.
/// Activations: int8 per super-block of 256 (as ggml's q8_K), with sums per 16.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q6_k {
    static constexpr const char* name = "q6_k";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 14;
    static constexpr bool integer = true;
    /// Codes carry +32; the activation sums come pre-scaled by -32 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 32;
    static constexpr unsigned bits = 6;
    static constexpr std::size_t block = 256, block_bytes = 210;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return 16; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols + 16 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b) + 208)), r, b);
    }
    /// Element e (0..255) of a super-block: its 6-bit code.
    static unsigned code(const std::uint8_t* p, std::size_t e) noexcept {
        const std::size_t h = e / 128, l = e % 32, part = (e % 128) / 32;
        const std::uint8_t* ql = p + 64 * h;
        const std::uint8_t* qh = p + 128 + 32 * h;
        const unsigned low = part == 0 ? ql[l] & 15u : part == 1 ? ql[l + 32] & 15u : part == 2 ? ql[l] >> 4 : ql[l + 32] >> 4;
        return low | (((qh[l] >> (2 * part)) & 3u) << 4);
    }
    /// Round-to-nearest reference quantizer (ours; ggml's searches for the scales instead):
    /// per sub-block of 16, scale = amax / 31; d = max scale / 127 (stored fp16);
    /// sc = round(scale / d); q = clamp(round(x / (d sc)), -32, 31) + 32. Half to even.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, block);
        detail::check_finite(name, w, n, k);
        quant_matrix mat{n, k, p, std::vector<std::uint8_t>(n * (k / block) * block_bytes), {}};
        using detail::round_even;
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t b = 0; b < k / block; ++b) {
                const float* x = w + r * k + b * block;
                std::uint8_t* out = mat.data.data() + (r * (k / block) + b) * block_bytes;
                float scale[16], max_scale = 0.0f;
                for (std::size_t j = 0; j < 16; ++j) {
                    float amax = 0.0f;
                    for (std::size_t l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * j + l]));
                    scale[j] = amax / 31.0f;
                    max_scale = std::max(max_scale, scale[j]);
                }
                const std::uint16_t dh = detail::float_to_fp16(max_scale / 127.0f);
                const float df = detail::fp16_to_float(dh);
                detail::store_u16(out + 208, dh);
                unsigned L[256];
                for (std::size_t j = 0; j < 16; ++j) {
                    const float ls = df > 0.0f ? std::min(127.0f, round_even(scale[j] / df)) : 0.0f;
                    out[192 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(ls));
                    const float ds = detail::barrier(df * ls);
                    for (std::size_t l = 0; l < 16; ++l) {
                        const float q = ds > 0.0f ? round_even(x[16 * j + l] / ds) : 0.0f;
                        L[16 * j + l] = static_cast<unsigned>(std::min(31.0f, std::max(-32.0f, q)) + 32.0f);
                    }
                }
                for (std::size_t h = 0; h < 2; ++h)
                    for (std::size_t l = 0; l < 32; ++l) {
                        const unsigned* q = L + 128 * h;
                        out[64 * h + l] = static_cast<std::uint8_t>((q[l] & 15) | ((q[l + 64] & 15) << 4));
                        out[64 * h + l + 32] = static_cast<std::uint8_t>((q[l + 32] & 15) | ((q[l + 96] & 15) << 4));
                        out[128 + 32 * h + l] = static_cast<std::uint8_t>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) |
                                                                          ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
                    }
            }
        return mat;
    }
    /// ggml's dequantize_row_q6_K: y = (d sc) (q - 32).
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p + 208));
                for (std::size_t e = 0; e < block; ++e) {
                    const float ds = detail::barrier(d * static_cast<float>(static_cast<std::int8_t>(p[192 + e / 16])));
                    out[r * v.cols + b * block + e] = ds * static_cast<float>(static_cast<int>(code(p, e)) - 32);
                }
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p + 208, 2);
        for (std::size_t j = 0; j < 16; ++j) scales[2 * panel_cols + panel_cols * j + col] = p[192 + j];
        for (std::size_t e = 0; e < block; ++e) codes[e] = static_cast<std::uint8_t>(code(p, e));
    }
    /// i = sum_j sc_j (dot_j(q, a) - 32 sum_j(a)) (exact); acc = fma(d d_a, i, acc).
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
            detail::dot6<L, M>(sb, block, 4 * j, 4, aq, mr, isum);
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
