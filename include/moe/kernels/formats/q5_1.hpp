/// @file kernels/formats/q5_1.hpp
/// GGUF Q5_1: blocks of 32 5-bit values along K with an fp16 scale and an fp16 minimum, 24 bytes
/// (`{ fp16 d; fp16 m; uint8 qh[4]; uint8 qs[16]; }`): qs[j] holds the low 4 bits of element j
/// (low nibble) and j + 16 (high nibble); bit j of the little-endian uint32 qh is bit 4 of element
/// j, bit j + 16 that of element j + 16; w = d * q + m. The type llama.cpp's quantizer stores a
/// Q5_K tensor in when its rows are not a multiple of 256 (Q5_K_M files of DeepSeek-V2-Lite and
/// Qwen1.5-MoE, F = 1408). Packed as 6-bit codes (bit 5 zero), so the kernel is q5_0's integer
/// dot with q4_1's minimum term. Activations: int8 per block of 32, with their sums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q5_1 {
    static constexpr const char* name = "q5_1";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 7;
    static constexpr bool integer = true;
    static constexpr unsigned bits = 6;  ///< the panel's code width (5-bit values, bit 5 zero)
    static constexpr std::size_t block = 32, block_bytes = 24;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    /// Per panel column: the fp16 scales of the 16 columns, then their fp16 minima.
    static std::size_t scale_bytes(const format_params&) noexcept { return 4 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// The 32 values q in [0, 31] of one block.
    static void codes_of(const std::uint8_t* p, std::uint8_t* q) noexcept {
        std::uint32_t qh = 0;
        for (int i = 0; i < 4; ++i) qh |= static_cast<std::uint32_t>(p[4 + i]) << (8 * i);
        detail::split_nibbles(p + 8, q);
        for (std::size_t j = 0; j < block; ++j) q[j] = static_cast<std::uint8_t>(q[j] | (((qh >> j) & 1u) << 4));
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b) + 2)), r, b);
            }
    }
    /// ggml's quantize_row_q5_1_ref: d = (max - min) / 31, m = min, q = (uint8)((x - min) / d + 0.5)
    /// (no clamp: (x - min) / d stays below 31.5), its bits 0-3 in qs and bit 4 in qh.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            float mn = std::numeric_limits<float>::max(), mx = -std::numeric_limits<float>::max();
            for (std::size_t j = 0; j < block; ++j) {
                mn = x[j] < mn ? x[j] : mn;
                mx = x[j] > mx ? x[j] : mx;
            }
            const float d = (mx - mn) / 31.0f, id = detail::finite_inverse(d);
            detail::store_u16(out, detail::float_to_fp16(d));
            detail::store_u16(out + 2, detail::float_to_fp16(mn));
            std::uint32_t qh = 0;
            for (std::size_t j = 0; j < block / 2; ++j) {
                const int q0 = detail::trunc_i8(detail::barrier((x[j] - mn) * id) + 0.5f);
                const int q1 = detail::trunc_i8(detail::barrier((x[j + 16] - mn) * id) + 0.5f);
                out[8 + j] = static_cast<std::uint8_t>((q0 & 15) | ((q1 & 15) << 4));
                qh |= static_cast<std::uint32_t>((q0 >> 4) & 1) << j;
                qh |= static_cast<std::uint32_t>((q1 >> 4) & 1) << (j + 16);
            }
            for (int i = 0; i < 4; ++i) out[4 + i] = static_cast<std::uint8_t>(qh >> (8 * i));
        });
    }
    /// w = d * q + m, rounded twice (no FMA), as the reference statement computes it.
    static void dequantize(const quant_view& v, float* out) {
        std::uint8_t q[block];
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p)), m = detail::fp16_to_float(detail::load_u16(p + 2));
                codes_of(p, q);
                float* y = out + r * v.cols + b * block;
                for (std::size_t j = 0; j < block; ++j) y[j] = detail::barrier(static_cast<float>(q[j]) * d) + m;
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        std::memcpy(scales + 2 * panel_cols + 2 * col, p + 2, 2);
        codes_of(p, codes);
    }
    /// acc += (d_w * d_a) * sum q a, then acc += (m_w * d_a) * sum a, for one block (q4_1's order).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::zero(); });
        detail::dot6<L, M>(sb, block, 0, block / 4, aq, mr, isum);
        const typename L::F dw = L::fp16x16(sb + detail::code_bytes(bits, block));
        const typename L::F mw = L::fp16x16(sb + detail::code_bytes(bits, block) + 2 * panel_cols);
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            const typename L::F da = L::bcast(ad[i]);
            acc[i] = L::fma(L::mul(dw, da), L::cvt(isum[i]), acc[i]);
            acc[i] = L::fma(L::mul(mw, da), L::bcast(static_cast<float>(as[i])), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
