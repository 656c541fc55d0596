/// @file kernels/formats/common.hpp
/// What every weight format shares: the source-tensor value type and the panel geometry of the
/// quantized expert kernels (the scalar conversions of the small float encodings and the
/// rounding rules the reference quantizers use are in moe/detail/numeric.hpp).
///
/// A weight matrix is N rows (output features) by K columns (input features, the dot-product
/// dimension), row-major as PyTorch and GGUF store it; every format's blocks run along K.
/// A format's *source bytes* are the bytes its checkpoints ship (a GGUF tensor's blocks, an
/// int8 matrix and its scales, ...): `quant_matrix` holds them as `data` plus, for formats whose
/// scales live in a separate tensor, `scales`.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../../config.hpp"
#include "../../detail/numeric.hpp"
#include "../../detail/unroll.hpp"

namespace moe::kernels::formats {

/// Columns (weight rows) of one packed panel of the quantized kernels, on every arch: the
/// packed bytes do not depend on the arch that runs them.
inline constexpr std::size_t panel_cols = 16;

/// Run-time parameters of a format: the group size of `int4` (32 or 128; its K block) and
/// whether `int4` carries zero points.
struct format_params {
    std::size_t group = 0;
    bool zero_points = false;
};

/// A weight matrix in a format's source layout: `data` (and `scales` where the format keeps
/// them apart) exactly as the format's checkpoints store it.
struct quant_matrix {
    std::size_t rows = 0, cols = 0;  ///< N, K
    format_params params;
    std::vector<std::uint8_t> data, scales;
};

/// A non-owning view of source bytes (e.g. a mapped checkpoint tensor).
struct quant_view {
    std::size_t rows = 0, cols = 0;
    format_params params;
    const std::uint8_t* data = nullptr;
    std::size_t data_bytes = 0;
    const std::uint8_t* scales = nullptr;
    std::size_t scale_bytes = 0;
};

[[nodiscard]] inline quant_view view_of(const quant_matrix& m) noexcept {
    return {m.rows, m.cols, m.params, m.data.data(), m.data.size(), m.scales.data(), m.scales.size()};
}

namespace detail {

/// The byte converters and rounding rules live in moe/detail/numeric.hpp, below io/ and kernels/.
using ::moe::detail::fp16_to_float;
using ::moe::detail::float_to_fp16;
using ::moe::detail::load_u16;
using ::moe::detail::store_u16;
using ::moe::detail::load_f32;
using ::moe::detail::store_f32;
using ::moe::detail::barrier;
using ::moe::detail::round_even;
using ::moe::detail::round_away;
using ::moe::detail::finite_inverse;
using ::moe::detail::trunc_i8;
using ::moe::detail::e4m3_to_float;
using ::moe::detail::float_to_e4m3;
using ::moe::detail::e2m1_values;
using ::moe::detail::e2m1_to_float;
using ::moe::detail::float_to_e2m1;
using ::moe::detail::e8m0_to_float;
using ::moe::detail::bf16_to_float;
using ::moe::detail::float_bits;
using ::moe::detail::float_to_bf16;
using ::moe::detail::float_to_bf16_ne;

/// One accumulation step of `vdpbf16ps` (Intel SDM: "FP32 FMA with DAZ in, FTZ out and RNE
/// rounding"): a subnormal input counts as a signed zero and a subnormal result is flushed to
/// a signed zero. The product of two bf16 values is exact in float, so std::fma is the step.
inline float fma_daz_ftz(float a, float b, float c) noexcept {
    auto daz = [](float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; };
    const float r = std::fma(daz(a), daz(b), daz(c));
    return std::fpclassify(r) == FP_SUBNORMAL ? std::copysign(0.0f, r) : r;
}

/// True for formats whose activations are bf16 pairs (`bf16_dot`), false for int8 activations.
template <class Fmt, class = void>
struct bf16_act : std::false_type {};
template <class Fmt>
struct bf16_act<Fmt, std::void_t<decltype(Fmt::bf16_activations)>> : std::bool_constant<Fmt::bf16_activations> {};
template <class Fmt>
inline constexpr bool bf16_act_v = bf16_act<Fmt>::value;

/// Throws [moe.kernels.format] unless the source bytes have exactly the expected lengths.
inline void check_bytes(const char* fmt, const quant_view& v, std::size_t data_bytes, std::size_t scale_bytes) {
    if (v.data_bytes != data_bytes || (v.data == nullptr && data_bytes != 0))
        MOE_THROW("moe.kernels.format", fmt, ": ", v.rows, " x ", v.cols, " needs ", data_bytes, " bytes of data, got ",
                  v.data_bytes);
    if (v.scale_bytes != scale_bytes || (v.scales == nullptr && scale_bytes != 0))
        MOE_THROW("moe.kernels.format", fmt, ": ", v.rows, " x ", v.cols, " needs ", scale_bytes, " bytes of scales, got ",
                  v.scale_bytes);
}
inline void check_k(const char* fmt, std::size_t k, std::size_t block) {
    if (k == 0 || k % block != 0)
        MOE_THROW("moe.kernels.format", fmt, ": K=", k, " is not a positive multiple of the block ", block);
}
/// The reference quantizers take finite weights only: NaN or infinity has no code.
inline void check_finite(const char* fmt, const float* w, std::size_t n, std::size_t k) {
    for (std::size_t i = 0; i < n * k; ++i)
        if (!std::isfinite(w[i]))
            MOE_THROW("moe.kernels.format", fmt, ": weight (", i / k, ", ", i % k, ") is ", w[i], " (not finite)");
}
/// The skeleton of ggml's block quantizers (`quantize_row_*_ref`): checks K and the weights,
/// then `encode(x, out)` turns each block of `block` weights x into its `block_bytes` bytes,
/// blocks of a row in order, rows in order.
template <class Encode>
quant_matrix quantize_blocks(const char* fmt, std::size_t block, std::size_t block_bytes, const float* w, std::size_t n,
                             std::size_t k, const format_params& p, Encode encode) {
    check_k(fmt, k, block);
    check_finite(fmt, w, n, k);
    quant_matrix m{n, k, p, std::vector<std::uint8_t>(n * (k / block) * block_bytes), {}};
    for (std::size_t r = 0; r < n; ++r)
        for (std::size_t b = 0; b < k / block; ++b) encode(w + r * k + b * block, m.data.data() + (r * (k / block) + b) * block_bytes);
    return m;
}
/// The value of largest magnitude among x[0, n), the first on ties (ggml's `max` of q4_0 / q5_0).
inline float signed_absmax(const float* x, std::size_t n) {
    float amax = 0.0f, max = 0.0f;
    for (std::size_t j = 0; j < n; ++j)
        if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    return max;
}
/// Scales must be finite: a NaN or infinite scale would poison every output it touches.
inline void check_scale(const char* fmt, float s, std::size_t row, std::size_t block) {
    if (!std::isfinite(s))
        MOE_THROW("moe.kernels.format", fmt, ": scale of row ", row, ", block ", block, " is ", s, " (not finite)");
}

/// Runs `step(r)` on r, a copy in locals of the accumulator chains acc[M][P], then stores r
/// back. L::F (__m512) may alias anything, so a decode loop that updated the caller's array in
/// place made GCC store every chain to memory after each FMA.
template <std::size_t M, std::size_t P, class F, class Step>
MOE_ALWAYS_INLINE void on_local_chains(F (*acc)[P], Step&& step) noexcept {
    F r[M][P];
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { for (std::size_t j = 0; j < P; ++j) r[i][j] = acc[i][j]; });
    step(r);
    moe::detail::unroll<M>([&](std::size_t i) MOE_LAMBDA_INLINE { for (std::size_t j = 0; j < P; ++j) acc[i][j] = r[i][j]; });
}

/// The 32 4-bit codes of a block stored in ggml's q4_0 order: byte j holds code j in its low
/// nibble and code j + 16 in its high one (q4_0, q4_1, iq4_nl, mxfp4:dot; q5_0 and q5_1 add a bit).
inline void split_nibbles(const std::uint8_t* p, std::uint8_t* codes) noexcept {
    for (std::size_t j = 0; j < 16; ++j) {
        codes[j] = p[j] & 15;
        codes[j + 16] = p[j] >> 4;
    }
}

/// Software prefetch (into L1) of the cache lines that hold bytes [b0, b1) of `p`: the
/// weight-only decode asks for the bytes of the K range it reads two ranges later.
inline void prefetch_bytes(const std::uint8_t* p, std::size_t b0, std::size_t b1) noexcept {
    for (std::size_t off = b0 & ~std::size_t(63); off < b1; off += 64) __builtin_prefetch(p + off, 0, 3);
}

}  // namespace detail
}  // namespace moe::kernels::formats
