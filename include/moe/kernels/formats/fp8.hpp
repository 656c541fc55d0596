/// @file kernels/formats/fp8.hpp
/// FP8 E4M3 weights with 128 x 128 block scales, DeepSeek-V3's layout: `data` N x K e4m3fn
/// bytes, `scales` ceil(N/128) x ceil(K/128) float32 (`weight_scale_inv`), w = e4m3 * scale.
/// Weight-only: activations stay float; each weight is dequantized (one rounding) and
/// multiplied with fp32 FMAs, so the kernel equals the float kernel on `dequantize`'s weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "common.hpp"

namespace moe::kernels::formats {

struct fp8 {
    static constexpr const char* name = "fp8";
    static constexpr bool integer = false;
    static constexpr std::size_t tile = 128;

    static std::size_t k_block(const format_params&) noexcept { return 1; }
    static std::size_t tiles(std::size_t x) noexcept { return (x + tile - 1) / tile; }
    static float scale(const quant_view& v, std::size_t r, std::size_t k) noexcept {
        return detail::load_f32(v.scales + 4 * ((r / tile) * tiles(v.cols) + k / tile));
    }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, 1);
        detail::check_bytes(name, v, v.rows * v.cols, tiles(v.rows) * tiles(v.cols) * 4);
        for (std::size_t b = 0; b < tiles(v.rows) * tiles(v.cols); ++b)
            detail::check_scale(name, detail::load_f32(v.scales + 4 * b), (b / tiles(v.cols)) * tile, (b % tiles(v.cols)));
        for (std::size_t i = 0; i < v.rows * v.cols; ++i)
            if ((v.data[i] & 0x7f) == 0x7f)
                MOE_THROW("moe.kernels.format", name, ": weight (", i / v.cols, ", ", i % v.cols, ") is an e4m3 NaN");
    }
    /// Per 128 x 128 tile: scale = amax / 448, q = e4m3(x / scale) (round to nearest even).
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, 1);
        detail::check_finite(name, w, n, k);
        quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * k), std::vector<std::uint8_t>(tiles(n) * tiles(k) * 4)};
        for (std::size_t bi = 0; bi < tiles(n); ++bi)
            for (std::size_t bj = 0; bj < tiles(k); ++bj) {
                const std::size_t r1 = std::min(n, (bi + 1) * tile), c1 = std::min(k, (bj + 1) * tile);
                float amax = 0.0f;
                for (std::size_t r = bi * tile; r < r1; ++r)
                    for (std::size_t c = bj * tile; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * k + c]));
                const float s = amax / 448.0f;
                detail::store_f32(m.scales.data() + 4 * (bi * tiles(k) + bj), s);
                for (std::size_t r = bi * tile; r < r1; ++r)
                    for (std::size_t c = bj * tile; c < c1; ++c)
                        m.data[r * k + c] = s > 0.0f ? detail::float_to_e4m3(w[r * k + c] / s) : 0;
            }
        return m;
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t c = 0; c < v.cols; ++c)
                out[r * v.cols + c] = detail::e4m3_to_float(v.data[r * v.cols + c]) * scale(v, r, c);
    }
    static std::size_t panel_bytes(std::size_t k, const format_params&) noexcept { return k * panel_cols + tiles(k) * 4 * panel_cols; }
    /// Panel: codes [K][16], then scales [ceil(K/128)][16] float32.
    static void pack_panel(const quant_view& v, const std::size_t* rows, std::uint8_t* dst) {
        const std::size_t K = v.cols;
        std::uint8_t* sc = dst + K * panel_cols;
        for (std::size_t n = 0; n < panel_cols; ++n) {
            if (rows[n] >= v.rows) continue;  // zero column: codes 0, scale 0
            for (std::size_t k = 0; k < K; ++k) dst[k * panel_cols + n] = v.data[rows[n] * K + k];
            for (std::size_t t = 0; t < tiles(K); ++t) detail::store_f32(sc + 4 * (t * panel_cols + n), scale(v, rows[n], t * tile));
        }
    }
    /// Prefetch the panel bytes `dequant(panel, K, k0, k1)` reads (codes and scales).
    static MOE_ALWAYS_INLINE void prefetch(const std::uint8_t* panel, std::size_t K, std::size_t k0, std::size_t k1) noexcept {
        detail::prefetch_bytes(panel, k0 * panel_cols, k1 * panel_cols);
        detail::prefetch_bytes(panel + K * panel_cols, k0 / tile * 4 * panel_cols, tiles(k1) * 4 * panel_cols);
    }
    /// Decode (a few rows, P panels): acc[i][j] += a[(k - k0) * lda + i] * w_j(k) for k in
    /// [k0, k1) in k order, one FMA per weight on the weight `dequant` gives (the same bits as
    /// dequantizing first), decoded in registers.
    template <class L, std::size_t M, std::size_t P>
    static MOE_ALWAYS_INLINE void fma_panels(const std::uint8_t* const* panels, std::size_t K, std::size_t k0, std::size_t k1,
                                             const float* a, std::size_t lda, typename L::F (*acc)[P]) noexcept {
        using F = typename L::F;
        detail::on_local_chains<M, P>(acc, [&](F(&r)[M][P]) MOE_LAMBDA_INLINE {
            for (std::size_t k = k0; k < k1;) {
                // w = e4m3 * s, one rounding. With s * 256 finite (exact) that is (e4m3 / 256) *
                // (s * 256): the same real product, so the same bits, and one multiplication fewer.
                F s[P];
                bool fold = true;
                for (std::size_t j = 0; j < P; ++j) {
                    const std::uint8_t* sp = panels[j] + K * panel_cols + 4 * panel_cols * (k / tile);
                    s[j] = L::f32x16(sp);
                    for (std::size_t n = 0; n < panel_cols; ++n)
                        fold = fold && std::fabs(detail::load_f32(sp + 4 * n)) <= std::numeric_limits<float>::max() / 256.0f;
                }
                const std::size_t kend = std::min(k1, (k / tile + 1) * tile);
                // Unrolled over panels and rows: with loop indices GCC -O2 kept r[][] in memory.
                auto step = [&](const float* ak, auto&& weight) MOE_LAMBDA_INLINE {
                    moe::detail::unroll<P>([&](auto Jc) MOE_LAMBDA_INLINE {
                        constexpr std::size_t j = decltype(Jc)::value;
                        const F w = weight(j);
                        moe::detail::unroll<M>([&](auto Ic) MOE_LAMBDA_INLINE {
                            constexpr std::size_t i = decltype(Ic)::value;
                            r[i][j] = L::fma(L::bcast(ak[i]), w, r[i][j]);
                        });
                    });
                };
                if (fold) {
                    for (std::size_t j = 0; j < P; ++j) s[j] = L::mul(s[j], L::bcast(256.0f));
                    for (; k < kend; ++k)
                        step(a + (k - k0) * lda, [&](std::size_t j) MOE_LAMBDA_INLINE {
                            return L::mul(L::e4m3x16_div256(panels[j] + k * panel_cols), s[j]);
                        });
                }
                for (; k < kend; ++k)
                    step(a + (k - k0) * lda,
                         [&](std::size_t j) MOE_LAMBDA_INLINE { return L::mul(L::e4m3x16(panels[j] + k * panel_cols), s[j]); });
            }
        });
    }
    /// dst[(k - k0) * 16 + n] = weight of column n at k, for k in [k0, k1).
    template <class L>
    static MOE_ALWAYS_INLINE void dequant(const std::uint8_t* panel, std::size_t K, std::size_t k0, std::size_t k1,
                                          float* dst) noexcept {
        const std::uint8_t* sc = panel + K * panel_cols;
        for (std::size_t k = k0; k < k1;) {
            const typename L::F s = L::f32x16(sc + 4 * panel_cols * (k / tile));
            const std::size_t kend = std::min(k1, (k / tile + 1) * tile);
            for (; k < kend; ++k) L::store(dst + (k - k0) * panel_cols, L::mul(L::e4m3x16(panel + k * panel_cols), s));
        }
    }
};

}  // namespace moe::kernels::formats
