/// @file kernels/formats/common.hpp
/// What every weight format shares: the source-tensor value type, scalar conversions of the
/// small float encodings (fp16, e4m3, e2m1, e8m0), the rounding rules the reference quantizers
/// use, and the panel geometry of the quantized expert kernels.
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

inline float fp16_to_float(std::uint16_t h) noexcept {
    return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h));
}
/// float -> fp16, round to nearest even (GGML_FP32_TO_FP16, numpy's float16).
inline std::uint16_t float_to_fp16(float f) noexcept { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f)); }
inline std::uint16_t load_u16(const std::uint8_t* p) noexcept { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
inline void store_u16(std::uint8_t* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v & 0xff);
    p[1] = static_cast<std::uint8_t>(v >> 8);
}
inline float load_f32(const std::uint8_t* p) noexcept {
    float f;
    std::memcpy(&f, p, 4);
    return f;
}
inline void store_f32(std::uint8_t* p, float f) noexcept { std::memcpy(p, &f, 4); }

/// Returns x unchanged, opaque to the optimiser: `barrier(a * b) + c` is rounded twice even
/// where the compiler contracts `a * b + c` into one fused multiply-add (GCC's default). The
/// reference quantizers and dequantizers use it so that their bytes match the published
/// formulas (and numpy) under any -ffp-contract setting.
inline float barrier(float x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+r,x"(x));
    return x;
#else
    volatile float v = x;
    return v;
#endif
}

/// Round half to even for |x| < 2^22 with two IEEE additions (ggml's nearest_int): the same
/// bits on every arch and compiler, vectorisable, independent of the rounding mode's libm.
inline float round_even(float x) noexcept {
    constexpr float big = 12582912.0f;  // 1.5 * 2^23; IEEE semantics forbid folding the two adds
    return (x + big) - big;
}
/// C roundf: half away from zero (ggml's q8_0 reference quantizer).
inline float round_away(float x) noexcept { return std::round(x); }

/// OCP FP8 E4M3 (e4m3fn: bias 7, no infinities, S.1111.111 is NaN) -> float, exact.
inline float e4m3_to_float(std::uint8_t b) noexcept {
    const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(static_cast<float>(8 + m), e - 10);
    if (e == 15 && m == 7) v = NAN;
    return s ? -v : v;
}
/// float -> E4M3, round to nearest even, saturating at +-448 (finite inputs).
inline std::uint8_t float_to_e4m3(float x) noexcept {
    const std::uint8_t sign = std::signbit(x) ? 0x80 : 0;
    float a = std::fabs(x);
    if (!(a <= 448.0f)) a = 448.0f;
    int e;
    std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
    int ex = e - 1;     // a in [2^ex, 2^(ex+1))
    if (ex < -6) ex = -6;
    const float quantum = std::ldexp(1.0f, ex - 3);
    const float q = round_even(a / quantum);  // exact division by a power of two
    std::uint32_t mant = static_cast<std::uint32_t>(q);  // 0..16 (16: carried into the next binade)
    int be = ex + 7;
    if (a < std::ldexp(1.0f, -6)) {  // subnormal range: quantum 2^-9, mant 0..8
        if (mant >= 8) return static_cast<std::uint8_t>(sign | (1 << 3) | (mant - 8));
        return static_cast<std::uint8_t>(sign | mant);
    }
    if (mant >= 16) {
        mant = 8;
        ++be;
    }
    if (be > 15 || (be == 15 && mant - 8 > 6)) return static_cast<std::uint8_t>(sign | 0x7e);  // 448
    return static_cast<std::uint8_t>(sign | (be << 3) | (mant - 8));
}

/// OCP FP4 E2M1 magnitudes by code (the sign is bit 3).
inline constexpr float e2m1_values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
inline float e2m1_to_float(std::uint8_t code) noexcept {
    const float v = e2m1_values[code & 7];
    return (code & 8) ? -v : v;
}
/// float -> E2M1 code, round to nearest with ties to the even code, saturating at 6.
inline std::uint8_t float_to_e2m1(float x) noexcept {
    const std::uint8_t sign = std::signbit(x) ? 8 : 0;
    const float a = std::fabs(x);
    std::uint8_t best = 7;
    for (std::uint8_t c = 0; c < 7; ++c) {
        const float lo = e2m1_values[c], hi = e2m1_values[c + 1], mid = (lo + hi) * 0.5f;
        if (a < mid || (a == mid && (c & 1) == 0)) {
            best = c;
            break;
        }
    }
    return static_cast<std::uint8_t>(sign | best);
}
/// E8M0 scale (bias 127; 255 is NaN) -> float, exact: 2^(e-127), subnormal 2^-127 for e = 0.
inline float e8m0_to_float(std::uint8_t e) noexcept {
    return e == 255 ? NAN : std::ldexp(1.0f, static_cast<int>(e) - 127);
}

/// bf16 bits -> float (exact, subnormals included).
inline float bf16_to_float(std::uint16_t h) noexcept {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline std::uint32_t float_bits(float f) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
/// float -> bf16, round to nearest even, subnormals kept, NaN quieted: PyTorch's and Eigen's
/// conversion (what a bf16 checkpoint holds).
inline std::uint16_t float_to_bf16(float f) noexcept {
    const std::uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);
    return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/// float -> bf16 as `vcvtneps2bf16` does it (Intel SDM): zero and subnormal inputs become a
/// signed zero, infinities keep their bits, NaN is truncated and quieted, normal numbers round
/// to nearest even (a carry may give infinity).
inline std::uint16_t float_to_bf16_ne(float f) noexcept {
    const std::uint32_t u = float_bits(f);
    if ((u & 0x7f800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    return float_to_bf16(f);
}
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
/// Scales must be finite: a NaN or infinite scale would poison every output it touches.
inline void check_scale(const char* fmt, float s, std::size_t row, std::size_t block) {
    if (!std::isfinite(s))
        MOE_THROW("moe.kernels.format", fmt, ": scale of row ", row, ", block ", block, " is ", s, " (not finite)");
}

}  // namespace detail
}  // namespace moe::kernels::formats
