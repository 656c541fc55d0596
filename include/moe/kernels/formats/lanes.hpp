/// @file kernels/formats/lanes.hpp
/// The 16-lane operations the quantized kernels are written in, once: a portable reference
/// (`generic_qlanes`, plain C++ over arrays) and AVX-512 VNNI (`avx512_qlanes`), chosen by arch.
///
/// A lane is one output column of a 16-column panel. Integer ops are exact, and every float op
/// is one IEEE operation per lane (explicit fused multiply-add where the formula has one), so
/// the two implementations give the same bits and a format's kernel code, written against
/// this interface, is its own scalar reference.
///
/// Byte vectors (`B`) hold 16 columns x 4 consecutive k of unsigned weight codes: byte 4n + j is
/// column n at k = 4u + j, the operand of one `vpdpbusd` (u8 x s8 -> i32, 4 products per lane).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../arch.hpp"
#include "../../config.hpp"
#include "common.hpp"

namespace moe::kernels::formats {

/// The portable reference lanes.
struct generic_qlanes {
    static constexpr bool simd = false;
    struct B {
        std::uint8_t b[64];
    };
    struct I {
        std::int32_t v[16];
    };
    struct F {
        float v[16];
    };
    static B load_b(const std::uint8_t* p) noexcept {
        B r;
        std::memcpy(r.b, p, 64);
        return r;
    }
    static B lo4(const B& x) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = x.b[i] & 15;
        return r;
    }
    static B hi4(const B& x) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = x.b[i] >> 4;
        return r;
    }
    /// lo | (((h >> 2s) & 3) << 4): a 6-bit code from its low nibble and 2 high bits.
    static B with_hi2(const B& lo, const B& h, int s) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = static_cast<std::uint8_t>(lo.b[i] | (((h.b[i] >> (2 * s)) & 3) << 4));
        return r;
    }
    static I zero() noexcept { return I{}; }
    /// acc + per lane n: sum_j w[4n + j] * (int8) byte j of a4.
    static I dpbusd(const I& acc, const B& w, std::int32_t a4) noexcept {
        std::int8_t a[4];
        std::memcpy(a, &a4, 4);
        I r = acc;
        for (int n = 0; n < 16; ++n)
            for (int j = 0; j < 4; ++j) r.v[n] += static_cast<std::int32_t>(w.b[4 * n + j]) * a[j];
        return r;
    }
    static I sub(const I& x, std::int32_t c) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = x.v[n] - c;
        return r;
    }
    static I add(const I& x, const I& y) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = x.v[n] + y.v[n];
        return r;
    }
    static I mullo(const I& x, const I& y) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = x.v[n] * y.v[n];
        return r;
    }
    static I mul_scalar(const I& x, std::int32_t c) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = x.v[n] * c;
        return r;
    }
    static I u8x16(const std::uint8_t* p) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = p[n];
        return r;
    }
    static I s8x16(const std::uint8_t* p) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = static_cast<std::int8_t>(p[n]);
        return r;
    }
    static F cvt(const I& x) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = static_cast<float>(x.v[n]);
        return r;
    }
    static F fzero() noexcept { return F{}; }
    static F bcast(float x) noexcept {
        F r;
        for (float& v : r.v) v = x;
        return r;
    }
    static F fma(const F& a, const F& b, const F& c) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = std::fma(a.v[n], b.v[n], c.v[n]);
        return r;
    }
    static F mul(const F& a, const F& b) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = a.v[n] * b.v[n];
        return r;
    }
    static F neg(const F& a) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = -a.v[n];
        return r;
    }
    static F fp16x16(const std::uint8_t* p) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::fp16_to_float(detail::load_u16(p + 2 * n));
        return r;
    }
    static F f32x16(const std::uint8_t* p) noexcept {
        F r;
        std::memcpy(r.v, p, 64);
        return r;
    }
    static F load(const float* p) noexcept {
        F r;
        std::memcpy(r.v, p, 64);
        return r;
    }
    static void store(float* p, const F& x) noexcept { std::memcpy(p, x.v, 64); }
    /// 16 E4M3 bytes -> float (exact).
    static F e4m3x16(const std::uint8_t* p) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::e4m3_to_float(p[n]);
        return r;
    }
    /// 16 E2M1 codes (low or high nibbles of 16 bytes) -> float (exact).
    static F e2m1x16(const std::uint8_t* p, bool high) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::e2m1_to_float(static_cast<std::uint8_t>(high ? p[n] >> 4 : p[n] & 15));
        return r;
    }
    /// 16 E8M0 bytes -> 2^(e-127) (exact; packing rejects 255).
    static F e8m0x16(const std::uint8_t* p) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::e8m0_to_float(p[n]);
        return r;
    }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define MOE_HAVE_AVX512_QLANES 1
/// AVX-512 VNNI lanes: one zmm per vector.
struct avx512_qlanes {
    static constexpr bool simd = true;
    using B = __m512i;
    using I = __m512i;
    using F = __m512;
    static MOE_ALWAYS_INLINE B load_b(const std::uint8_t* p) noexcept { return _mm512_loadu_si512(p); }
    static MOE_ALWAYS_INLINE B lo4(B x) noexcept { return _mm512_and_si512(x, _mm512_set1_epi8(15)); }
    static MOE_ALWAYS_INLINE B hi4(B x) noexcept { return _mm512_and_si512(_mm512_srli_epi16(x, 4), _mm512_set1_epi8(15)); }
    static MOE_ALWAYS_INLINE B with_hi2(B lo, B h, int s) noexcept {
        // ((h >> 2s) & 3) << 4 == (h << (4 - 2s)) & 0x30 for s <= 2, (h >> 2) & 0x30 for s = 3.
        const __m512i m = _mm512_set1_epi8(0x30);
        __m512i t;
        switch (s) {
            case 0: t = _mm512_slli_epi16(h, 4); break;
            case 1: t = _mm512_slli_epi16(h, 2); break;
            case 2: t = h; break;
            default: t = _mm512_srli_epi16(h, 2); break;
        }
        return _mm512_or_si512(lo, _mm512_and_si512(t, m));
    }
    static MOE_ALWAYS_INLINE I zero() noexcept { return _mm512_setzero_si512(); }
    static MOE_ALWAYS_INLINE I dpbusd(I acc, B w, std::int32_t a4) noexcept {
        return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(a4));
    }
    static MOE_ALWAYS_INLINE I sub(I x, std::int32_t c) noexcept { return _mm512_sub_epi32(x, _mm512_set1_epi32(c)); }
    static MOE_ALWAYS_INLINE I add(I x, I y) noexcept { return _mm512_add_epi32(x, y); }
    static MOE_ALWAYS_INLINE I mullo(I x, I y) noexcept { return _mm512_mullo_epi32(x, y); }
    static MOE_ALWAYS_INLINE I mul_scalar(I x, std::int32_t c) noexcept { return _mm512_mullo_epi32(x, _mm512_set1_epi32(c)); }
    static MOE_ALWAYS_INLINE I u8x16(const std::uint8_t* p) noexcept {
        return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static MOE_ALWAYS_INLINE I s8x16(const std::uint8_t* p) noexcept {
        return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static MOE_ALWAYS_INLINE F cvt(I x) noexcept { return _mm512_cvtepi32_ps(x); }
    static MOE_ALWAYS_INLINE F fzero() noexcept { return _mm512_setzero_ps(); }
    static MOE_ALWAYS_INLINE F bcast(float x) noexcept { return _mm512_set1_ps(x); }
    static MOE_ALWAYS_INLINE F fma(F a, F b, F c) noexcept { return _mm512_fmadd_ps(a, b, c); }
    static MOE_ALWAYS_INLINE F mul(F a, F b) noexcept { return _mm512_mul_ps(a, b); }
    static MOE_ALWAYS_INLINE F neg(F a) noexcept { return _mm512_sub_ps(_mm512_setzero_ps(), a); }
    static MOE_ALWAYS_INLINE F fp16x16(const std::uint8_t* p) noexcept {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static MOE_ALWAYS_INLINE F f32x16(const std::uint8_t* p) noexcept { return _mm512_loadu_ps(p); }
    static MOE_ALWAYS_INLINE F load(const float* p) noexcept { return _mm512_loadu_ps(p); }
    static MOE_ALWAYS_INLINE void store(float* p, F x) noexcept { _mm512_storeu_ps(p, x); }
    static MOE_ALWAYS_INLINE F e4m3x16(const std::uint8_t* p) noexcept {
        // e4m3 bits s.eeee.mmm as fp16 bits s.0eeee.mmm0000000 are the value times 2^-8,
        // subnormals included; the multiplication by 2^8 is exact.
        const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8),
                                          _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7f)), 7));
        return _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
    }
    static MOE_ALWAYS_INLINE F e2m1x16(const std::uint8_t* p, bool high) noexcept {
        const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                          -3.0f, -4.0f, -6.0f);
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        if (high) c = _mm512_srli_epi32(c, 4);
        return _mm512_permutexvar_ps(_mm512_and_si512(c, _mm512_set1_epi32(15)), lut);
    }
    static MOE_ALWAYS_INLINE F e8m0x16(const std::uint8_t* p) noexcept {
        const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512 normal = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
        const __mmask16 z = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
        return _mm512_mask_mov_ps(normal, z, _mm512_castsi512_ps(_mm512_set1_epi32(0x00400000)));  // 2^-127
    }
};
#endif

namespace detail {
template <class Arch>
struct qlanes_for {
    using type = generic_qlanes;
};
#if defined(MOE_HAVE_AVX512_QLANES) && XSIMD_WITH_AVX512BW
template <class Arch>
struct qlanes_for_avx512 {
    using type = std::conditional_t<std::is_base_of<xsimd::avx512bw, Arch>::value, avx512_qlanes, generic_qlanes>;
};
#endif
}  // namespace detail

/// The lanes the quantized kernels use for `Arch`: AVX-512 VNNI when `Arch` is an AVX-512BW
/// arch and the translation unit is built with VNNI (-mavx512vnni or -march=native on a CPU
/// that has it), the portable reference otherwise. Both give the same bits.
template <class Arch>
using qlanes_t =
#if defined(MOE_HAVE_AVX512_QLANES) && XSIMD_WITH_AVX512BW
    typename detail::qlanes_for_avx512<Arch>::type;
#else
    typename detail::qlanes_for<Arch>::type;
#endif

}  // namespace moe::kernels::formats
