/// @file kernels/formats/q8_0.hpp
/// GGUF Q8_0: blocks of 32 int8 values along K with one fp16 scale, 34 bytes
/// (`{ fp16 d; int8 qs[32]; }`), w = d * q. Activations: int8 per block of 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q8_0 {
    static constexpr const char* name = "q8_0";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 8;
    static constexpr bool integer = true;
    /// Codes carry +128; the activation sums come pre-scaled by -128 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 128;
    static constexpr unsigned bits = 8;
    static constexpr std::size_t block = 32, block_bytes = 34;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 2 * panel_cols; }

    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * (v.cols / block) * block_bytes, 0);
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b)
                detail::check_scale(name, detail::fp16_to_float(detail::load_u16(at(v, r, b))), r, b);
    }
    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
    }
    /// ggml's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d) (half away from zero).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f, id = detail::finite_inverse(d);
            detail::store_u16(out, detail::float_to_fp16(d));
            for (std::size_t j = 0; j < block; ++j)
                out[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(detail::round_away(x[j] * id)));
        });
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p));
                for (std::size_t j = 0; j < block; ++j)
                    out[r * v.cols + b * block + j] = d * static_cast<float>(static_cast<std::int8_t>(p[2 + j]));
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        for (std::size_t j = 0; j < block; ++j) codes[j] = static_cast<std::uint8_t>(p[2 + j] ^ 0x80);  // q + 128
    }
    /// acc += (d_w * d_a) * (sum q_u a - 128 sum a) for one block.
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::splat(as + i); });  // -offset x sum a
        detail::dot8<L, M>(sb, 0, block / 4, aq, mr, isum);
        const typename L::F dw = L::fp16x16(sb + detail::code_bytes(bits, block));
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(dw, L::bcast(ad[i])), L::cvt(isum[i]), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
