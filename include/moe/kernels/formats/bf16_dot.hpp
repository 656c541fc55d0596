/// @file kernels/formats/bf16_dot.hpp
/// bf16 weights multiplied with the native bf16 dot product (`vdpbf16ps`, AVX512-BF16), the
/// way PyTorch's oneDNN path and engines run bf16 checkpoints: activations are rounded to bf16
/// (`vcvtneps2bf16`: round to nearest even, subnormals to zero) and every pair of products is
/// accumulated in float by the instruction's two fused steps (k odd, then k even; DAZ in, FTZ
/// out). `data` is N x K bf16 (little-endian, as a safetensors BF16 tensor), no scales.
///
/// Summation order, per output element (the same on every arch; the portable lanes emulate
/// the instruction step by step, so results are bit-identical with or without AVX512-BF16):
/// pair u = (k = 2u, 2u + 1) goes to chain u % 2; each chain starts at +0 and runs
///     c = fma(w[2u+1], a[2u+1], c); c = fma(w[2u], a[2u], c)     (DAZ / FTZ each step)
/// over its pairs in order; the result is chain0 + chain1 (an ordinary float add).
/// The exact alternative is the `bf16` format (`expert_ffn` with Eigen::bfloat16 weights),
/// which widens the weights and keeps float activations.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common.hpp"

namespace moe::kernels::formats {

struct bf16_dot {
    static constexpr const char* name = "bf16:dot";
    static constexpr bool integer = true;  ///< runs the integer formats' pipeline (packed operands)
    static constexpr bool bf16_activations = true;
    static constexpr unsigned bits = 16;

    static std::size_t k_block(const format_params&) noexcept { return 2; }
    static std::size_t act_block(std::size_t k, const format_params&) noexcept { return k; }
    static std::size_t sum_block(std::size_t k, const format_params&) noexcept { return k; }
    static std::size_t scale_bytes(const format_params&) noexcept { return 0; }

    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, 2);
        detail::check_bytes(name, v, v.rows * v.cols * 2, 0);
        for (std::size_t i = 0; i < v.rows * v.cols; ++i)
            if ((detail::load_u16(v.data + 2 * i) & 0x7f80u) == 0x7f80u)
                MOE_THROW("moe.kernels.format", name, ": weight (", i / v.cols, ", ", i % v.cols, ") is ",
                          detail::bf16_to_float(detail::load_u16(v.data + 2 * i)), " (not finite)");
    }
    /// Round to nearest even (PyTorch's `.to(torch.bfloat16)`).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, 2);
        detail::check_finite(name, w, n, k);
        quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * k * 2), {}};
        for (std::size_t i = 0; i < n * k; ++i) detail::store_u16(m.data.data() + 2 * i, detail::float_to_bf16(w[i]));
        return m;
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t i = 0; i < v.rows * v.cols; ++i) out[i] = detail::bf16_to_float(detail::load_u16(v.data + 2 * i));
    }
    /// Panel: K/2 units of 64 bytes; bytes 4n..4n+3 of unit u are column n at k = 2u, 2u + 1.
    static void pack_panel(const quant_view& v, const std::size_t* rows, std::uint8_t* dst) {
        const std::size_t K = v.cols;
        for (std::size_t n = 0; n < panel_cols; ++n) {
            if (rows[n] >= v.rows) continue;  // zero column
            const std::uint8_t* src = v.data + rows[n] * K * 2;
            for (std::size_t u = 0; u < K / 2; ++u) std::memcpy(dst + 64 * u + 4 * n, src + 4 * u, 4);
        }
    }
    /// acc[i] = the dot product of the whole row (one call per row block: one "super-block" of K).
    template <class L, std::size_t M>
    static MOE_ALWAYS_INLINE void step(const std::uint8_t* sb, const std::int32_t* aq, const float*, const std::int32_t*,
                                       std::size_t mr, std::size_t sbk, const format_params&, typename L::F* acc) noexcept {
        typename L::F alt[M];
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = alt[i] = L::fzero(); });
        const std::size_t units = sbk / 2;
        auto a2 = [&](std::size_t u, std::size_t i) { return static_cast<std::uint32_t>(aq[u * mr + i]); };
        std::size_t u = 0;
        for (; u + 2 <= units; u += 2) {
            __builtin_prefetch(sb + 64 * u + 2048, 0, 3);
            __builtin_prefetch(sb + 64 * u + 2112, 0, 3);
            const typename L::B w0 = L::load_b(sb + 64 * u), w1 = L::load_b(sb + 64 * (u + 1));
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = L::dpbf16(acc[i], w0, a2(u, i)); });
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { alt[i] = L::dpbf16(alt[i], w1, a2(u + 1, i)); });
        }
        if (u < units) {
            const typename L::B w0 = L::load_b(sb + 64 * u);
            moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = L::dpbf16(acc[i], w0, a2(u, i)); });
        }
        moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { acc[i] = L::fadd(acc[i], alt[i]); });
    }
};

}  // namespace moe::kernels::formats
