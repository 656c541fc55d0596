/// @file kernels/formats/q5_0.hpp
/// GGUF Q5_0: blocks of 32 5-bit values along K with one fp16 scale, 22 bytes
/// (`{ fp16 d; uint8 qh[4]; uint8 qs[16]; }`): qs[j] holds the low 4 bits of element j (low
/// nibble) and j + 16 (high nibble); bit j of the little-endian uint32 qh is bit 4 of element j,
/// bit j + 16 that of element j + 16; w = d * (q - 16). Packed as 6-bit codes (bit 5 zero: the
/// panel's 6-bit layout), so the kernel is q6_k's exact integer dot with one scale per block.
/// Activations: int8 per block of 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q5_0 {
    static constexpr const char* name = "q5_0";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 6;
    static constexpr bool integer = true;
    /// Codes carry +16; the activation sums come pre-scaled by -16 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 16;
    static constexpr unsigned bits = 6;  ///< the panel's code width (5-bit values, bit 5 zero)
    static constexpr std::size_t block = 32, block_bytes = 22;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    static std::uint32_t high_bits(const std::uint8_t* p) noexcept {
        return static_cast<std::uint32_t>(p[2]) | (static_cast<std::uint32_t>(p[3]) << 8) | (static_cast<std::uint32_t>(p[4]) << 16) |
               (static_cast<std::uint32_t>(p[5]) << 24);
    }
    /// The 32 values q in [0, 31] of one block.
    static void codes_of(const std::uint8_t* p, std::uint8_t* q) noexcept {
        const std::uint32_t qh = high_bits(p);
        detail::split_nibbles(p + 6, q);
        for (std::size_t j = 0; j < block; ++j) q[j] = static_cast<std::uint8_t>(q[j] | (((qh >> j) & 1u) << 4));
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
    }
    /// ggml's quantize_row_q5_0_ref: d = max / -16 (max: the value of largest magnitude),
    /// q = min(31, (int8)(x / d + 16.5)).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            const float d = detail::signed_absmax(x, block) / -16.0f, id = detail::finite_inverse(d);
            detail::store_u16(out, detail::float_to_fp16(d));
            std::uint32_t qh = 0;
            for (std::size_t j = 0; j < block / 2; ++j) {
                const int q0 = std::min(31, detail::trunc_i8(detail::barrier(x[j] * id) + 16.5f));
                const int q1 = std::min(31, detail::trunc_i8(detail::barrier(x[j + 16] * id) + 16.5f));
                out[6 + j] = static_cast<std::uint8_t>((q0 & 15) | ((q1 & 15) << 4));
                qh |= static_cast<std::uint32_t>((q0 >> 4) & 1) << j;
                qh |= static_cast<std::uint32_t>((q1 >> 4) & 1) << (j + 16);
            }
            for (int i = 0; i < 4; ++i) out[2 + i] = static_cast<std::uint8_t>(qh >> (8 * i));
        });
    }
    static void dequantize(const quant_view& v, float* out) {
        std::uint8_t q[block];
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p));
                codes_of(p, q);
                float* y = out + r * v.cols + b * block;
                for (std::size_t j = 0; j < block; ++j) y[j] = static_cast<float>(static_cast<int>(q[j]) - 16) * d;
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        codes_of(p, codes);
    }
    /// acc += (d_w * d_a) * (sum q a - 16 sum a) for one block.
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::splat(as + i); });  // -offset x sum a
        detail::dot6<L, M>(sb, block, 0, block / 4, aq, mr, isum);
        const typename L::F dw = L::fp16x16(sb + detail::code_bytes(bits, block));
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(dw, L::bcast(ad[i])), L::cvt(isum[i]), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
