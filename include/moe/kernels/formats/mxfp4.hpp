/// @file kernels/formats/mxfp4.hpp
/// MXFP4 (OCP Microscaling): blocks of 32 FP4 E2M1 values along K sharing one E8M0 scale,
/// in GPT-OSS's checkpoint layout: `data` (`*_blocks`) N x K/32 x 16 bytes, element 2i in the
/// low nibble of byte i and 2i + 1 in the high nibble; `scales` (`*_scales`) N x K/32 uint8,
/// w = e2m1 * 2^(scale - 127). Weight-only: activations stay float; the dequantized weights
/// are exact, so the kernel equals the float kernel on `dequantize`'s weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common.hpp"

namespace moe::kernels::formats {

namespace detail {
/// OCP MX's shared exponent of a block: X = floor(log2(amax)) - 2 (E2M1's largest exponent),
/// clamped to [-127, 127]; -127 for an all-zero block. The scale byte is X + 127.
inline int mx_exponent(const float* x, std::size_t n) noexcept {
    float amax = 0.0f;
    for (std::size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    if (!(amax > 0.0f)) return -127;
    int e;
    std::frexp(amax, &e);
    return std::min(127, std::max(-127, e - 1 - 2));
}
}  // namespace detail

struct mxfp4 {
    static constexpr const char* name = "mxfp4";
    /// The ggml type id of GGUF's MXFP4 (its own block layout: read through `dequantize_ggml`).
    static constexpr int gguf_type = 39;
    static constexpr bool integer = false;
    static constexpr std::size_t block = 32;

    static std::size_t k_block(const format_params&) noexcept { return block; }
    static void validate(const quant_view& v) {
        detail::check_k(name, v.cols, block);
        detail::check_bytes(name, v, v.rows * v.cols / 2, v.rows * v.cols / block);
        for (std::size_t i = 0; i < v.rows * (v.cols / block); ++i)
            if (v.scales[i] == 255)
                MOE_THROW("moe.kernels.format", name, ": scale of row ", i / (v.cols / block), ", block ", i % (v.cols / block),
                          " is the E8M0 NaN (255)");
    }
    /// OCP MX: X = floor(log2(amax)) - 2 (E2M1's largest exponent), clamped to [-127, 127];
    /// scale byte X + 127; codes = e2m1(x / 2^X), round to nearest even, saturating at 6.
    static quant_matrix quantize(const float* w, std::size_t n, std::size_t k, const format_params& p = {}) {
        detail::check_k(name, k, block);
        detail::check_finite(name, w, n, k);
        quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * k / 2), std::vector<std::uint8_t>(n * k / block)};
        for (std::size_t r = 0; r < n; ++r)
            for (std::size_t b = 0; b < k / block; ++b) {
                const float* x = w + r * k + b * block;
                const int X = detail::mx_exponent(x, block);
                m.scales[r * (k / block) + b] = static_cast<std::uint8_t>(X + 127);
                for (std::size_t j = 0; j < block; ++j) {
                    const std::uint8_t c = detail::float_to_e2m1(std::ldexp(x[j], -X));
                    m.data[(r * k + b * block + j) / 2] |= static_cast<std::uint8_t>(c << ((j & 1) * 4));
                }
            }
        return m;
    }
    static void dequantize(const quant_view& v, float* out) {
        for (std::size_t r = 0; r < v.rows; ++r)
            for (std::size_t j = 0; j < v.cols; ++j) {
                const std::uint8_t b = v.data[(r * v.cols + j) / 2];
                out[r * v.cols + j] = detail::e2m1_to_float(static_cast<std::uint8_t>((j & 1) ? b >> 4 : b & 15)) *
                                      detail::e8m0_to_float(v.scales[r * (v.cols / block) + j / block]);
            }
    }
    /// ggml's `block_mxfp4` layout (GGUF type MXFP4): per 32 values one E8M0 byte then 16
    /// bytes, value j in the low nibble of byte j and value j + 16 in the high nibble. `what`
    /// names the tensor in the error of a NaN scale.
    static constexpr std::size_t ggml_block_bytes = 17;
    static void dequantize_ggml(const std::uint8_t* p, std::size_t rows, std::size_t cols, float* out, const std::string& what) {
        detail::check_k(name, cols, block);
        for (std::size_t b = 0; b < rows * cols / block; ++b) {
            const std::uint8_t* blk = p + ggml_block_bytes * b;
            if (blk[0] == 255) MOE_THROW("moe.kernels.format", name, ": ", what, ": scale of block ", b, " is the E8M0 NaN (255)");
            const float s = detail::e8m0_to_float(blk[0]);
            for (std::size_t j = 0; j < 16; ++j) {
                out[block * b + j] = detail::e2m1_to_float(static_cast<std::uint8_t>(blk[1 + j] & 15)) * s;
                out[block * b + 16 + j] = detail::e2m1_to_float(static_cast<std::uint8_t>(blk[1 + j] >> 4)) * s;
            }
        }
    }
    static std::size_t panel_bytes(std::size_t k, const format_params&) noexcept { return k / 2 * panel_cols + k / block * panel_cols; }
    /// Panel: codes [K/2][16] (byte n of pair p: k = 2p low nibble, 2p + 1 high), then scales
    /// [K/32][16].
    static void pack_panel(const quant_view& v, const std::size_t* rows, std::uint8_t* dst) {
        const std::size_t K = v.cols;
        std::uint8_t* sc = dst + K / 2 * panel_cols;
        for (std::size_t n = 0; n < panel_cols; ++n) {
            if (rows[n] >= v.rows) continue;  // zero column: codes 0 (and scale bytes 0)
            for (std::size_t p = 0; p < K / 2; ++p) dst[p * panel_cols + n] = v.data[rows[n] * (K / 2) + p];
            for (std::size_t b = 0; b < K / block; ++b) sc[b * panel_cols + n] = v.scales[rows[n] * (K / block) + b];
        }
    }
    /// Prefetch the panel bytes `dequant(panel, K, k0, k1)` reads (codes and scales).
    static MOE_ALWAYS_INLINE void prefetch(const std::uint8_t* panel, std::size_t K, std::size_t k0, std::size_t k1) noexcept {
        detail::prefetch_bytes(panel, k0 / 2 * panel_cols, (k1 + 1) / 2 * panel_cols);
        detail::prefetch_bytes(panel + K / 2 * panel_cols, k0 / block * panel_cols, (k1 + block - 1) / block * panel_cols);
    }
    /// Decode (a few rows, P panels): acc[i][j] += a[(k - k0) * lda + i] * w_j(k) for k in
    /// [k0, k1) in k order, one FMA per weight on the weight `dequant` gives (the same bits as
    /// dequantizing first), decoded in registers. k0 and k1 are multiples of the block (32).
    template <class L, std::size_t M, std::size_t P>
    static MOE_ALWAYS_INLINE void fma_panels(const std::uint8_t* const* panels, std::size_t K, std::size_t k0, std::size_t k1,
                                             const float* a, std::size_t lda, typename L::F (*acc)[P]) noexcept {
        using F = typename L::F;
        detail::on_local_chains<M, P>(acc, [&](F(&r)[M][P]) MOE_LAMBDA_INLINE {
            for (std::size_t b = k0 / block; b < k1 / block; ++b) {
                F s[P];
                for (std::size_t j = 0; j < P; ++j) s[j] = L::e8m0x16(panels[j] + K / 2 * panel_cols + b * panel_cols);
                const float* ab = a + (b * block - k0) * lda;
                for (std::size_t q = 0; q < block / 2; ++q) {
                    const float* ak = ab + 2 * q * lda;
                    // Unrolled over panels and rows: with loop indices GCC -O2 kept r[][] in
                    // memory (2-4x slower at 2-8 rows, hot in L1).
                    moe::detail::unroll<P>([&](auto Jc) MOE_LAMBDA_INLINE {
                        constexpr std::size_t j = decltype(Jc)::value;
                        F lo, hi;
                        L::e2m1x16x2(panels[j] + (b * (block / 2) + q) * panel_cols, lo, hi);
                        lo = L::mul(lo, s[j]);
                        hi = L::mul(hi, s[j]);
                        moe::detail::unroll<M>([&](auto Ic) MOE_LAMBDA_INLINE {
                            constexpr std::size_t i = decltype(Ic)::value;
                            r[i][j] = L::fma(L::bcast(ak[i]), lo, r[i][j]);
                        });
                        moe::detail::unroll<M>([&](auto Ic) MOE_LAMBDA_INLINE {
                            constexpr std::size_t i = decltype(Ic)::value;
                            r[i][j] = L::fma(L::bcast(ak[lda + i]), hi, r[i][j]);
                        });
                    });
                }
            }
        });
    }
    template <class L>
    static MOE_ALWAYS_INLINE void dequant(const std::uint8_t* panel, std::size_t K, std::size_t k0, std::size_t k1,
                                          float* dst) noexcept {
        const std::uint8_t* sc = panel + K / 2 * panel_cols;
        if (k0 % block == 0 && k1 % block == 0) {  // the kernels' K blocks: whole blocks, each byte once
            for (std::size_t b = k0 / block; b < k1 / block; ++b) {
                const typename L::F s = L::e8m0x16(sc + panel_cols * b);
                const std::uint8_t* codes = panel + b * (block / 2) * panel_cols;
                float* out = dst + (b * block - k0) * panel_cols;
                for (std::size_t p = 0; p < block / 2; ++p) {
                    typename L::F lo, hi;
                    L::e2m1x16x2(codes + p * panel_cols, lo, hi);
                    L::store(out + 2 * p * panel_cols, L::mul(lo, s));
                    L::store(out + (2 * p + 1) * panel_cols, L::mul(hi, s));
                }
            }
            return;
        }
        for (std::size_t k = k0; k < k1;) {
            const typename L::F s = L::e8m0x16(sc + panel_cols * (k / block));
            const std::size_t kend = std::min(k1, (k / block + 1) * block);
            for (; k < kend; ++k)
                L::store(dst + (k - k0) * panel_cols, L::mul(L::e2m1x16(panel + (k / 2) * panel_cols, (k & 1) != 0), s));
        }
    }
};

}  // namespace moe::kernels::formats
