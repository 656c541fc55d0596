/// @file kernels/formats/q4_1.hpp
/// GGUF Q4_1: blocks of 32 4-bit values along K with an fp16 scale and an fp16 minimum, 20 bytes
/// (`{ fp16 d; fp16 m; uint8 qs[16]; }`; qs[j] holds element j in its low nibble and j + 16 in
/// its high nibble), w = d * q + m. Activations: int8 per block of 32, with their sums for the
/// minimum's term.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct q4_1 {
    static constexpr const char* name = "q4_1";
    /// The ggml type id whose blocks are this format's `data` bytes (a GGUF tensor packs in place).
    static constexpr int gguf_type = 3;
    static constexpr bool integer = true;
    static constexpr unsigned bits = 4;
    static constexpr std::size_t block = 32, block_bytes = 20;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static std::size_t act_block(std::size_t, const format_params&) noexcept { return block; }
    static std::size_t sum_block(std::size_t, const format_params&) noexcept { return block; }
    /// Per panel column: the fp16 scales of the 16 columns, then their fp16 minima.
    static std::size_t scale_bytes(const format_params&) noexcept { return 4 * panel_cols; }

    static const std::uint8_t* at(const quant_view& v, std::size_t r, std::size_t b) noexcept {
        return v.data + (r * (v.cols / block) + b) * block_bytes;
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
    /// ggml's quantize_row_q4_1_ref: d = (max - min) / 15, m = min,
    /// q = min(15, (int8)((x - min) / d + 0.5)).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        return detail::quantize_blocks(name, block, block_bytes, w, n, k, p, [](const float* x, std::uint8_t* out) {
            float mn = std::numeric_limits<float>::max(), mx = -std::numeric_limits<float>::max();
            for (std::size_t j = 0; j < block; ++j) {
                mn = std::min(mn, x[j]);
                mx = std::max(mx, x[j]);
            }
            const float d = (mx - mn) / 15.0f, id = detail::finite_inverse(d);
            detail::store_u16(out, detail::float_to_fp16(d));
            detail::store_u16(out + 2, detail::float_to_fp16(mn));
            for (std::size_t j = 0; j < block / 2; ++j) {
                const int q0 = std::min(15, detail::trunc_i8(detail::barrier((x[j] - mn) * id) + 0.5f));
                const int q1 = std::min(15, detail::trunc_i8(detail::barrier((x[j + 16] - mn) * id) + 0.5f));
                out[4 + j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
            }
        });
    }
    /// w = d * q + m, rounded twice (no FMA), as the reference statement computes it.
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t b = 0; b < v.cols / block; ++b) {
                const std::uint8_t* p = at(v, r, b);
                const float d = detail::fp16_to_float(detail::load_u16(p)), m = detail::fp16_to_float(detail::load_u16(p + 2));
                float* y = out + r * v.cols + b * block;
                std::uint8_t q[block];
                detail::split_nibbles(p + 4, q);
                for (std::size_t j = 0; j < block; ++j) y[j] = detail::barrier(static_cast<float>(q[j]) * d) + m;
            }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t b, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        const std::uint8_t* p = at(v, r, b);
        std::memcpy(scales + 2 * col, p, 2);
        std::memcpy(scales + 2 * panel_cols + 2 * col, p + 2, 2);
        detail::split_nibbles(p + 4, codes);
    }
    /// acc += (d_w * d_a) * sum q a, then acc += (m_w * d_a) * sum a, for one block.
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t /*sb*/, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::zero(); });
        detail::dot4<L, M>(sb, 0, block / 4, aq, mr, isum);
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
