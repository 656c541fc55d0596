/// @file detail/lane_math.hpp
/// Elementwise math written once over "lanes": a float (moe::scalar) or an xsimd batch.
///
/// Why not std::exp / xsimd::exp: moe promises that routing decisions do not depend on the
/// instruction set. Every function here uses the same sequence of IEEE operations on every
/// arch, with explicit fused multiply-adds (std::fma for scalar, the FMA instruction for SIMD)
/// and never a bare `a * b + c` that a compiler might contract on one path and not the other.
/// The results are therefore bit-identical between `moe::scalar` and every SIMD arch.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../arch.hpp"
#include "../config.hpp"

namespace moe::detail {

template <class Arch, bool Simd = has_simd_path_v<Arch>>
struct lane_ops;

/// One float lane: the reference.
template <class Arch>
struct lane_ops<Arch, false> {
    using V = float;
    static constexpr std::size_t width = 1;
    static V splat(float x) noexcept { return x; }
    static V load(const float* p) noexcept { return *p; }
    static void store(float* p, V v) noexcept { *p = v; }
    static V fmadd(V a, V b, V c) noexcept { return std::fma(a, b, c); }
    static V div(V a, V b) noexcept { return a / b; }
    static V round_even(V x) noexcept { return std::nearbyint(x); }
    static V trunc(V x) noexcept { return std::trunc(x); }
    static V max(V a, V b) noexcept { return a < b ? b : a; }
    static V abs(V a) noexcept { return std::fabs(a); }
    static V sqrt(V a) noexcept { return std::sqrt(a); }
    static V select_gt(V a, V b, V x, V y) noexcept { return a > b ? x : y; }
    static V select_eq(V a, V b, V x, V y) noexcept { return a == b ? x : y; }
    /// 2^n for an integral n in [-126, 127].
    static V pow2i(V n) noexcept {
        const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
        float r;
        std::memcpy(&r, &bits, sizeof r);
        return r;
    }
    /// True when x is NaN or +inf (the values moe rejects in logits).
    static bool any_bad(V x) noexcept { return x != x || x == HUGE_VALF; }
};

/// An xsimd batch of floats; only instantiated for archs with a hardware FMA.
template <class Arch>
struct lane_ops<Arch, true> {
    using V = xsimd::batch<float, Arch>;
    using I = xsimd::batch<std::int32_t, Arch>;
    static constexpr std::size_t width = V::size;
    static V splat(float x) noexcept { return V(x); }
    static V load(const float* p) noexcept { return V::load_unaligned(p); }
    static void store(float* p, V v) noexcept { v.store_unaligned(p); }
    /// Non-temporal store; `p` must be aligned to the vector size.
    static void stream(float* p, V v) noexcept {
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
            _mm512_stream_ps(p, v);
            return;
        }
#endif
#if XSIMD_WITH_AVX
        if constexpr (width == 8) {
            _mm256_stream_ps(p, v);
            return;
        }
#endif
        v.store_aligned(p);
    }
    static V fmadd(V a, V b, V c) noexcept {
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
            return V(_mm512_fmadd_ps(a, b, c));
        } else
#endif
#if XSIMD_WITH_FMA3_AVX
            if constexpr (std::is_base_of<xsimd::fma3<xsimd::avx2>, Arch>::value ||
                          std::is_base_of<xsimd::fma3<xsimd::avx>, Arch>::value) {
            return V(_mm256_fmadd_ps(a, b, c));
        } else
#endif
#if XSIMD_WITH_NEON64
            if constexpr (std::is_base_of<xsimd::neon64, Arch>::value) {
            return V(vfmaq_f32(c, a, b));  // FMLA: c + a * b, rounded once
        } else
#endif
        {
#if XSIMD_WITH_FMA3_SSE
            return V(_mm_fmadd_ps(a, b, c));
#else
            static_assert(sizeof(Arch) == 0, "moe: no fused multiply-add for this arch");
            static_cast<void>(b);
            static_cast<void>(c);
            return a;
#endif
        }
    }
    /// a / b, correctly rounded. Never `a / b` on batches: xsimd 8.1's NEON float division is a
    /// reciprocal estimate with two Newton steps, not IEEE division.
    static V div(V a, V b) noexcept {
#if XSIMD_WITH_NEON64
        if constexpr (std::is_base_of<xsimd::neon64, Arch>::value) return V(vdivq_f32(a, b));  // FDIV
#endif
        return a / b;
    }
    static V round_even(V x) noexcept { return round_mode<true>(x); }
    static V trunc(V x) noexcept { return round_mode<false>(x); }
    /// Round to an integral value: to nearest-even (`Nearest`) or toward zero.
    template <bool Nearest>
    static V round_mode(V x) noexcept {
#if XSIMD_WITH_AVX512F
        // The masked form takes an explicit source: GCC 12's unmasked intrinsic reads an
        // "undefined" register and warns (GCC bug 105593).
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
            constexpr int mode = (Nearest ? _MM_FROUND_TO_NEAREST_INT : _MM_FROUND_TO_ZERO) | _MM_FROUND_NO_EXC;
            return V(_mm512_mask_roundscale_ps(x, 0xFFFF, x, mode));
        } else
#endif
#if XSIMD_WITH_NEON64
            // FRINTN / FRINTZ (xsimd 8.1 has no NEON nearbyint; its generic one is emulated).
            if constexpr (std::is_base_of<xsimd::neon64, Arch>::value) {
            if constexpr (Nearest) return V(vrndnq_f32(x));
            else return V(vrndq_f32(x));
        } else
#endif
        {
            if constexpr (Nearest) return xsimd::nearbyint(x);
            else return xsimd::trunc(x);
        }
    }
    static V max(V a, V b) noexcept { return xsimd::select(a < b, b, a); }
    static V abs(V a) noexcept { return xsimd::abs(a); }
    static V sqrt(V a) noexcept {
#if XSIMD_WITH_NEON64
        // FSQRT, correctly rounded: xsimd 8.1's NEON float sqrt is a reciprocal-estimate
        // approximation, which would make results depend on the arch.
        if constexpr (std::is_base_of<xsimd::neon64, Arch>::value) return V(vsqrtq_f32(a));
#endif
        return xsimd::sqrt(a);
    }
    static V select_gt(V a, V b, V x, V y) noexcept { return xsimd::select(a > b, x, y); }
    static V select_eq(V a, V b, V x, V y) noexcept { return xsimd::select(a == b, x, y); }
    static V pow2i(V n) noexcept {
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) {
            // vscalefps: 1 * 2^n, exact for integral n in range (masked form: see round_even).
            const __m512 one = _mm512_set1_ps(1.0f);
            return V(_mm512_mask_scalef_ps(one, 0xFFFF, one, n));
        } else
#endif
        {
            const I e = (xsimd::to_int(n) + I(127)) << 23;
            return xsimd::bitwise_cast<V>(e);
        }
    }
    /// Lanes holding NaN or +inf. (Not `x != x`: xsimd 8.1's AVX-512 `!=` is an ordered
    /// compare, false for NaN; xsimd::isnan is unordered on every arch.)
    static typename V::batch_bool_type bad_lanes(V x) noexcept { return xsimd::isnan(x) || (x == V(HUGE_VALF)); }
    static bool any_bad(V x) noexcept { return xsimd::any(bad_lanes(x)); }
};

/// e^x for x <= 0 (x = -inf gives 0), with correctly scaled subnormal results, ~1 ulp.
/// Cephes' expf polynomial on a Cody-Waite reduced argument; the 2^n scaling is split in
/// two factors so that results in the subnormal range are rounded once, as libm does.
template <class Arch>
[[nodiscard]] MOE_ALWAYS_INLINE typename lane_ops<Arch>::V exp_nonpos(typename lane_ops<Arch>::V x) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    // max(-104, x) in this operand order also maps NaN to -104 (e^NaN -> 0): never UB below.
    x = O::max(O::splat(-104.0f), x);
    const V n = O::round_even(x * O::splat(1.44269504088896341f));
    V r = O::fmadd(n, O::splat(-0.693359375f), x);
    r = O::fmadd(n, O::splat(2.12194440e-4f), r);
    const V z = r * r;
    V p = O::splat(1.9875691500e-4f);
    p = O::fmadd(p, r, O::splat(1.3981999507e-3f));
    p = O::fmadd(p, r, O::splat(8.3334519073e-3f));
    p = O::fmadd(p, r, O::splat(4.1665795894e-2f));
    p = O::fmadd(p, r, O::splat(1.6666665459e-1f));
    p = O::fmadd(p, r, O::splat(5.0000001201e-1f));
    V y = O::fmadd(p, z, r) + O::splat(1.0f);
    const V n1 = O::trunc(n * O::splat(0.5f));
    const V n2 = n - n1;
    return (y * O::pow2i(n1)) * O::pow2i(n2);
}

/// log(u) for u in [1, 2] (Cephes' logf polynomial).
template <class Arch>
[[nodiscard]] MOE_ALWAYS_INLINE typename lane_ops<Arch>::V log_1_2(typename lane_ops<Arch>::V u) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    const V sqrt2 = O::splat(1.41421356237f);
    const V e = O::select_gt(u, sqrt2, O::splat(1.0f), O::splat(0.0f));
    const V m = O::select_gt(u, sqrt2, u * O::splat(0.5f), u);
    const V x = m - O::splat(1.0f);
    const V z = x * x;
    V p = O::splat(7.0376836292e-2f);
    p = O::fmadd(p, x, O::splat(-1.1514610310e-1f));
    p = O::fmadd(p, x, O::splat(1.1676998740e-1f));
    p = O::fmadd(p, x, O::splat(-1.2420140846e-1f));
    p = O::fmadd(p, x, O::splat(1.4249322787e-1f));
    p = O::fmadd(p, x, O::splat(-1.6668057665e-1f));
    p = O::fmadd(p, x, O::splat(2.0000714765e-1f));
    p = O::fmadd(p, x, O::splat(-2.4999993993e-1f));
    p = O::fmadd(p, x, O::splat(3.3333331174e-1f));
    V y = (p * x) * z;
    y = O::fmadd(e, O::splat(-2.12194440e-4f), y);
    y = O::fmadd(z, O::splat(-0.5f), y);
    V r = x + y;
    return O::fmadd(e, O::splat(0.693359375f), r);
}

/// log(1 + y) for y in [0, 1], with the (y - (u - 1)) / u correction for the rounding of 1 + y.
template <class Arch>
[[nodiscard]] MOE_ALWAYS_INLINE typename lane_ops<Arch>::V log1p_01(typename lane_ops<Arch>::V y) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    const V u = y + O::splat(1.0f);
    const V d = u - O::splat(1.0f);
    const V res = log_1_2<Arch>(u) + O::div(y - d, u);
    return O::select_eq(d, O::splat(0.0f), y, res);
}

/// sigmoid(x) = 1 / (1 + e^-x), evaluated as e^x / (1 + e^x) for x < 0 so tiny results keep
/// their precision; exactly 0 for x <= -88.72283935546875, where torch's 1 / (1 + exp(-x))
/// overflows exp to +inf (the subnormal e^x / (1 + e^x) would differ from torch there, and
/// under DeepSeek-V3's 0.0 group mask that changes which expert is chosen).
template <class Arch>
[[nodiscard]] MOE_ALWAYS_INLINE typename lane_ops<Arch>::V sigmoid(typename lane_ops<Arch>::V x) noexcept {
    using O = lane_ops<Arch>;
    using V = typename O::V;
    const V e = exp_nonpos<Arch>(O::splat(0.0f) - O::abs(x));
    const V one = O::splat(1.0f);
    const V den = one + e;
    const V r = O::select_gt(x, O::splat(0.0f), O::div(one, den), O::div(e, den));
    // -88.72283172607422f is the float above -88.72283935546875f: x < it <=> x <= the bound.
    return O::select_gt(O::splat(-88.72283172607422f), x, O::splat(0.0f), r);
}

/// sqrt(softplus(x)), softplus(x) = max(x, 0) + log1p(e^-|x|).
template <class Arch>
[[nodiscard]] MOE_ALWAYS_INLINE typename lane_ops<Arch>::V sqrt_softplus(typename lane_ops<Arch>::V x) noexcept {
    using O = lane_ops<Arch>;
    const auto sp = O::max(x, O::splat(0.0f)) + log1p_01<Arch>(exp_nonpos<Arch>(O::splat(0.0f) - O::abs(x)));
    return O::sqrt(sp);
}

}  // namespace moe::detail
