/// @file kernels/formats/q4_0.hpp
/// GGUF Q4_0: blocks of 32 4-bit values along K with one fp16 scale, 18 bytes
/// (`{ fp16 d; uint8 qs[16]; }`; qs[j] holds element j in its low nibble and j + 16 in its high
/// nibble), w = d * (q - 8). Activations: int8 per block of 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q4_0 {
    static constexpr const char* name = "q4_0";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 2;
    static constexpr bool integer = true;
    /// Codes carry +8; the activation sums come pre-scaled by -8 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 8;
    static constexpr unsigned bits = 4;
    static constexpr std::size_t block = 32, block_bytes = 18;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
    }
    /// ggml's quantize_row_q4_0_ref: d = max / -8 (max: the value of largest magnitude),
    /// q = min(15, (int8)(x / d + 8.5)).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            const float d = detail::signed_absmax(x, block) / -8.0f, id = detail::finite_inverse(d);
            detail::store_u16(out, detail::float_to_fp16(d));
            for (std::size_t j = 0; j < block / 2; ++j) {
                const int q0 = std::min(15, detail::trunc_i8(detail::barrier(x[j] * id) + 8.5f));
                const int q1 = std::min(15, detail::trunc_i8(detail::barrier(x[j + 16] * id) + 8.5f));
                out[2 + j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
            }
        });
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p));
                float* y = out + r * v.cols + b * block;
                std::uint8_t q[block];
                detail::split_nibbles(p + 2, q);
                for (std::size_t j = 0; j < block; ++j) y[j] = static_cast<float>(q[j] - 8) * d;
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        detail::split_nibbles(p + 2, codes);
    }
    /// acc += (d_w * d_a) * (sum q a - 8 sum a) for one block.
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::splat(as + i); });  // -offset x sum a
        detail::dot4<L, M>(sb, 0, block / 4, aq, mr, isum);
        const typename L::F dw = L::fp16x16(sb + detail::code_bytes(bits, block));
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(dw, L::bcast(ad[i])), L::cvt(isum[i]), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
