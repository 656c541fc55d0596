/// @file detail/numeric.hpp
/// Scalar conversions of the small float encodings that checkpoints and weight formats store
/// (fp16, bf16, OCP FP8 E4M3, FP4 E2M1, E8M0 scales), little-endian loads and stores, and the
/// rounding rules of the reference quantizers. The bottom layer: both the file readers (io/)
/// and the kernels (kernels/formats/) use them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include <Eigen/Core>

#include "barrier.hpp"

namespace moe {
namespace detail {

/// fp16 bits -> float (exact).
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

/// Round half to even for |x| < 2^22 with two IEEE additions (ggml's nearest_int): the same
/// bits on every arch and compiler, vectorisable, independent of the rounding mode's libm.
inline float round_even(float x) noexcept {
    constexpr float big = 12582912.0f;  // 1.5 * 2^23; IEEE semantics forbid folding the two adds
    return (x + big) - big;
}
/// 1 / d, or 0 where d is 0 or so small (|d| < 2^-128) that 1 / d overflows: ggml's
/// reference quantizers multiply by 1 / d and then convert to an integer, which for an
/// infinite product is undefined behaviour in C (x86 gives 0). Such a block's scale is 0 in
/// fp16, so its codes are 0 either way.
inline float finite_inverse(float d) noexcept {
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    return std::isfinite(id) ? id : 0.0f;
}
/// `(int8_t)x` of ggml's reference quantizers where C defines it (x in (-129, 128)); elsewhere,
/// where C leaves the conversion undefined (a NaN or an overflowed product, whose block's fp16
/// scale is then not finite and is rejected by validate), 0 for NaN and the nearest end of
/// the range otherwise.
inline int trunc_i8(float x) noexcept {
    if (!(x > -129.0f)) return x != x ? 0 : -128;
    return x < 128.0f ? static_cast<int>(static_cast<std::int8_t>(x)) : 127;
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

}  // namespace detail
}  // namespace moe
