/// @file kernels/formats/int8.hpp
/// int8 weights with one symmetric float32 scale per output channel (W8A8 as SGLang and
/// KTransformers run it): `data` N x K int8, `scales` N float32, w = scale * q, q in
/// [-127, 127]. Activations: int8 with one scale per token row (per-token dynamic
/// quantization), so a whole row is one exact integer dot product. K: a multiple of 4, at
/// most 65536 (the exact int32 sum's bound).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "common.hpp"
#include "panel.hpp"

namespace moe::kernels::formats {

struct int8 {
    static constexpr const char* name = "int8";
    static constexpr bool integer = true;
    /// Codes carry +128; the activation sums come pre-scaled by -128 (detail::sum_offset).
    static constexpr std::int32_t sum_offset = 128;
    static constexpr unsigned bits = 8;

    static std::size_t k_block(const format_params&) noexcept { return 4; }
    static std::size_t act_block(std::size_t k, const format_params&) noexcept { return k; }
    static std::size_t sum_block(std::size_t k, const format_params&) noexcept { return k; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 4 * panel_cols; }

    static void check_shape(std::size_t k) {
        detail::check_k(name, k, 4);
        if (k > 65536) MOE_THROW("moe.kernels.format", name, ": K=", k, " exceeds 65536 (exact int32 accumulation)");
    }
    static void validate(const quant_view& v) {
        check_shape(v.cols);
        detail::check_bytes(name, v, v.rows * v.cols, v.rows * 4);
        for (std::size_t r = 0; r < v.rows; ++r) detail::check_scale(name, detail::load_f32(v.scales + 4 * r), r, 0);
    }
    /// scale = amax / 127, q = round(x / scale) (half to even).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        check_shape(k);
        detail::check_finite(name, w, n, k);
        quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * k), std::vector<std::uint8_t>(n * 4)};
        for (std::size_t r = 0; r < n; ++r) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < k; ++j) amax = std::max(amax, std::fabs(w[r * k + j]));
            const float s = amax / 127.0f;
            detail::store_f32(m.scales.data() + 4 * r, s);
            for (std::size_t j = 0; j < k; ++j) {
                const float q = s > 0.0f ? std::min(127.0f, std::max(-127.0f, detail::round_even(w[r * k + j] / s))) : 0.0f;
                m.data[r * k + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
            }
        }
        return m;
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r) {
            const float s = detail::load_f32(v.scales + 4 * r);
            for (std::size_t j = 0; j < v.cols; ++j)
                out[r * v.cols + j] = s * static_cast<float>(static_cast<std::int8_t>(v.data[r * v.cols + j]));
        }
    }
    static void decode(const quant_view& v, std::size_t r, std::size_t, std::uint8_t* codes, std::uint8_t* scales,
                       std::size_t col) noexcept {
        std::memcpy(scales + 4 * col, v.scales + 4 * r, 4);
        for (std::size_t j = 0; j < v.cols; ++j) codes[j] = static_cast<std::uint8_t>(v.data[r * v.cols + j] ^ 0x80);
    }
    /// acc += (s_w * d_a) * (sum q_u a - 128 sum a) over the whole row.
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float* ad,
                                       const std::int32_t* as, std::size_t mr, std::size_t sbk, const format_params&,
                                       typename L::F* acc) noexcept {
        typename L::I isum[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { isum[i] = L::splat(as + i); });  // -offset x sum a
        detail::dot8<L, M>(sb, 0, sbk / 4, aq, mr, isum);
        const typename L::F sw = L::f32x16(sb + detail::code_bytes(bits, sbk));
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE {
            acc[i] = L::fma(L::mul(sw, L::bcast(ad[i])), L::cvt(isum[i]), acc[i]);
        });
    }
};

}  // namespace moe::kernels::formats
