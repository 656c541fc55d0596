/// @file kernels/formats/lanes.hpp
/// The 16-lane operations the quantized kernels are written in, once: a portable reference
/// (`generic_qlanes`, plain C++ over arrays), AVX-512 VNNI (`avx512_qlanes`), AVX2
/// (`avx2_qlanes`) and AArch64 NEON (`neon_qlanes`: USDOT with i8mm, SDOT with dotprod, widening
/// multiplies without), chosen by arch and the translation unit's target flags.
///
/// A lane is one output column of a 16-column panel. Integer ops are exact, and every float op
/// is one IEEE operation per lane (explicit fused multiply-add where the formula has one), so
/// the two implementations give the same bits and a format's kernel code, written against
/// this interface, is its own scalar reference.
///
/// Byte vectors (`B`) hold 16 columns x 4 consecutive k of unsigned weight codes: byte 4n + j is
/// column n at k = 4u + j, the operand of one `vpdpbusd` (u8 x s8 -> i32, 4 products per lane);
/// for bf16 weights, 16 columns x 2 consecutive k (bytes 4n..4n+3), the operand of `vdpbf16ps`.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
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
    /// lo | (((h >> 2s) & 3) << 4): a 6-bit code from its low nibble (lo < 16) and 2 high bits.
    static B with_hi2(const B& lo, const B& h, int s) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = static_cast<std::uint8_t>(lo.b[i] | (((h.b[i] >> (2 * s)) & 3) << 4));
        return r;
    }
    /// (x >> 2s) & 3 per byte: a 2-bit code of the 2-bit panel layout, s in [0, 3].
    static B crumb(const B& x, int s) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = static_cast<std::uint8_t>((x.b[i] >> (2 * s)) & 3);
        return r;
    }
    /// c | (((h >> s) & 1) << 2): a 3-bit code from its 2 low bits (c < 4) and its high bit, s in [0, 7].
    static B with_bit2(const B& c, const B& h, int s) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = static_cast<std::uint8_t>(c.b[i] | (((h.b[i] >> s) & 1) << 2));
        return r;
    }
    /// A 16-entry byte table, repeated in every 16 bytes (the operand of `lut`).
    static B table16(const std::uint8_t* t) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = t[i % 16];
        return r;
    }
    /// t[x] per byte, x in [0, 15] (a nibble from lo4 / hi4): the non-linear 4-bit codes.
    static B lut(const B& x, const B& t) noexcept {
        B r;
        for (int i = 0; i < 64; ++i) r.b[i] = t.b[x.b[i] & 15];
        return r;
    }
    static I zero() noexcept { return I{}; }
    /// *p in every lane (an integer read from memory: the row's pre-scaled code sum).
    static I splat(const std::int32_t* p) noexcept {
        I r;
        for (int n = 0; n < 16; ++n) r.v[n] = *p;
        return r;
    }
    /// acc + per lane n: sum_j w[4n + j] * (int8) byte j of a4.
    static I dpbusd(const I& acc, const B& w, std::int32_t a4) noexcept {
        std::int8_t a[4];
        std::memcpy(a, &a4, 4);
        I r = acc;
        for (int n = 0; n < 16; ++n)
            for (int j = 0; j < 4; ++j) r.v[n] += static_cast<std::int32_t>(w.b[4 * n + j]) * a[j];
        return r;
    }
    /// `vdpbf16ps` with a broadcast pair: per lane n, the bf16 weights at k odd (bytes 4n + 2,
    /// 4n + 3) and k even (bytes 4n, 4n + 1) times the bf16 activations in the high and low
    /// half of a2, accumulated in that order, each step one FMA with DAZ in and FTZ out.
    static F dpbf16(const F& acc, const B& w, std::uint32_t a2) noexcept {
        const float a_even = detail::bf16_to_float(static_cast<std::uint16_t>(a2 & 0xffffu));
        const float a_odd = detail::bf16_to_float(static_cast<std::uint16_t>(a2 >> 16));
        F r;
        for (int n = 0; n < 16; ++n) {
            const float w_even = detail::bf16_to_float(detail::load_u16(w.b + 4 * n));
            const float w_odd = detail::bf16_to_float(detail::load_u16(w.b + 4 * n + 2));
            r.v[n] = detail::fma_daz_ftz(w_even, a_even, detail::fma_daz_ftz(w_odd, a_odd, acc.v[n]));
        }
        return r;
    }
    static F fadd(const F& a, const F& b) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = a.v[n] + b.v[n];
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
    /// The same times 2^-8 (exact: the SIMD lanes' fp16 step gives this before its x 256).
    static F e4m3x16_div256(const std::uint8_t* p) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::e4m3_to_float(p[n]) * (1.0f / 256.0f);
        return r;
    }
    /// 16 E2M1 codes (low or high nibbles of 16 bytes) -> float (exact).
    static F e2m1x16(const std::uint8_t* p, bool high) noexcept {
        F r;
        for (int n = 0; n < 16; ++n) r.v[n] = detail::e2m1_to_float(static_cast<std::uint8_t>(high ? p[n] >> 4 : p[n] & 15));
        return r;
    }
    /// Both nibbles of 16 bytes: lo = the low codes, hi = the high codes (two K steps at once).
    static void e2m1x16x2(const std::uint8_t* p, F& lo, F& hi) noexcept {
        lo = e2m1x16(p, false);
        hi = e2m1x16(p, true);
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
    /// 32 zmm hold two accumulator chains for each of a row block's 8 rows (panel.hpp's
    /// split_rows): on an Intel Xeon (Sapphire Rapids class) int8's dot loop went from 0.66 to
    /// 0.84-0.95 of the vpdpbusd peak with it (with dpbusd's tied accumulator below; L1 / L2
    /// resident micro-benchmark).
    static constexpr std::size_t split_rows = 8;
    /// Weight-only decode: 16 float accumulator chains in registers (quant_ffn.hpp's wo_panels).
    static constexpr std::size_t wo_chains = 16;
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
    // 16-bit shifts: the bits that cross from the neighbouring byte are masked off.
    static MOE_ALWAYS_INLINE B crumb(B x, int s) noexcept {
        return _mm512_and_si512(_mm512_srl_epi16(x, _mm_cvtsi32_si128(2 * s)), _mm512_set1_epi8(3));
    }
    static MOE_ALWAYS_INLINE B with_bit2(B c, B h, int s) noexcept {
        const __m512i b = _mm512_and_si512(_mm512_srl_epi16(h, _mm_cvtsi32_si128(s)), _mm512_set1_epi8(1));
        return _mm512_or_si512(c, _mm512_slli_epi16(b, 2));
    }
    static MOE_ALWAYS_INLINE B table16(const std::uint8_t* t) noexcept {
        return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
    }
    static MOE_ALWAYS_INLINE B lut(B x, B t) noexcept { return _mm512_shuffle_epi8(t, x); }
    static MOE_ALWAYS_INLINE I zero() noexcept { return _mm512_setzero_si512(); }
    static MOE_ALWAYS_INLINE I splat(const std::int32_t* p) noexcept { return _mm512_set1_epi32(*p); }  // vpbroadcastd m32: a load, no ALU
    static MOE_ALWAYS_INLINE I dpbusd(I acc, B w, std::int32_t a4) noexcept {
#if defined(__GNUC__) && !defined(__clang__)
        // GCC 12 does not keep the intrinsic's accumulator in place: it copies every accumulator
        // into a scratch register and back around each vpdpbusd (two vmovdqa per product). The
        // instruction itself, its accumulator tied, is the same operation. Measured on an Intel
        // Xeon (one core, 8 rows x 16 columns, K = 1024, L1-resident): 16 chains 497 GOP/s with
        // the intrinsic, 688 with this (vpdpbusd peak 721); 8 chains 477 either way.
        const __m512i a = _mm512_set1_epi32(a4);
        __asm__("vpdpbusd %[a], %[w], %[acc]" : [acc] "+v"(acc) : [w] "v"(w), [a] "v"(a));
        return acc;
#else
        return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(a4));
#endif
    }
    static MOE_ALWAYS_INLINE F dpbf16(F acc, B w, std::uint32_t a2) noexcept {
#if defined(__AVX512BF16__)
        return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)_mm512_set1_epi32(static_cast<int>(a2)));
#else
        // Built without AVX512-BF16: the reference step, lane by lane (same bits, slow).
        generic_qlanes::F a;
        generic_qlanes::B b;
        _mm512_storeu_ps(a.v, acc);
        _mm512_storeu_si512(b.b, w);
        return _mm512_loadu_ps(generic_qlanes::dpbf16(a, b, a2).v);
#endif
    }
    static MOE_ALWAYS_INLINE F fadd(F a, F b) noexcept { return _mm512_add_ps(a, b); }
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
    static MOE_ALWAYS_INLINE F neg(F a) noexcept {  // the sign flipped, as -x (0 - x would turn -0 into +0)
        return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
    }
    static MOE_ALWAYS_INLINE F fp16x16(const std::uint8_t* p) noexcept {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static MOE_ALWAYS_INLINE F f32x16(const std::uint8_t* p) noexcept { return _mm512_loadu_ps(p); }
    static MOE_ALWAYS_INLINE F load(const float* p) noexcept { return _mm512_loadu_ps(p); }
    static MOE_ALWAYS_INLINE void store(float* p, F x) noexcept { _mm512_storeu_ps(p, x); }
    static MOE_ALWAYS_INLINE F e4m3x16_div256(const std::uint8_t* p) noexcept {
        // e4m3 bits s.eeee.mmm as fp16 bits s.0eeee.mmm0000000 are the value times 2^-8,
        // subnormals included: the byte sign-extended and shifted left by 7 is s.s.eeee.mmm.0^7,
        // and clearing bit 14 gives those bits.
        const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF))));
    }
    static MOE_ALWAYS_INLINE F e4m3x16(const std::uint8_t* p) noexcept {  // the multiplication by 2^8 is exact
        return _mm512_mul_ps(e4m3x16_div256(p), _mm512_set1_ps(256.0f));
    }
    static MOE_ALWAYS_INLINE F e2m1x16(const std::uint8_t* p, bool high) noexcept {
        const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                          -3.0f, -4.0f, -6.0f);
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        if (high) c = _mm512_srli_epi32(c, 4);
        return _mm512_permutexvar_ps(_mm512_and_si512(c, _mm512_set1_epi32(15)), lut);
    }
    static MOE_ALWAYS_INLINE void e2m1x16x2(const std::uint8_t* p, F& lo, F& hi) noexcept {
        const __m512 lut = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                          -3.0f, -4.0f, -6.0f);
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        lo = _mm512_permutexvar_ps(c, lut);  // vpermps reads the index's low 4 bits only
        hi = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), lut);
    }
    static MOE_ALWAYS_INLINE F e8m0x16(const std::uint8_t* p) noexcept {
        const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512 normal = _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
        const __mmask16 z = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
        return _mm512_mask_mov_ps(normal, z, _mm512_castsi512_ps(_mm512_set1_epi32(0x00400000)));  // 2^-127
    }
};
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define MOE_HAVE_AVX2_QLANES 1
/// AVX2 lanes: two ymm per vector (columns 0..7 and 8..15). AVX2 has no `vpdpbusd` (AVX-VNNI
/// is not assumed): u8 x s8 products go through `vpmaddwd` on zero- / sign-extended 16-bit
/// halves, which is exact (`vpmaddubsw` would saturate). `dpbf16` is the reference step (use
/// the widening bf16 path on CPUs without AVX512-BF16).
struct avx2_qlanes {
    static constexpr bool simd = true;
    struct B {
        __m256i lo, hi;
    };
    struct I {
        __m256i lo, hi;
    };
    struct F {
        __m256 lo, hi;
    };
    static MOE_ALWAYS_INLINE __m256i ld(const std::uint8_t* p) noexcept { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static MOE_ALWAYS_INLINE __m128i ld8(const std::uint8_t* p) noexcept { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
    static MOE_ALWAYS_INLINE B load_b(const std::uint8_t* p) noexcept { return {ld(p), ld(p + 32)}; }
    static MOE_ALWAYS_INLINE B lo4(const B& x) noexcept {
        const __m256i m = _mm256_set1_epi8(15);
        return {_mm256_and_si256(x.lo, m), _mm256_and_si256(x.hi, m)};
    }
    static MOE_ALWAYS_INLINE B hi4(const B& x) noexcept {
        const __m256i m = _mm256_set1_epi8(15);
        return {_mm256_and_si256(_mm256_srli_epi16(x.lo, 4), m), _mm256_and_si256(_mm256_srli_epi16(x.hi, 4), m)};
    }
    static MOE_ALWAYS_INLINE __m256i hi2(__m256i h, int s) noexcept {
        switch (s) {
            case 0: return _mm256_slli_epi16(h, 4);
            case 1: return _mm256_slli_epi16(h, 2);
            case 2: return h;
            default: return _mm256_srli_epi16(h, 2);
        }
    }
    static MOE_ALWAYS_INLINE B with_hi2(const B& lo, const B& h, int s) noexcept {
        const __m256i m = _mm256_set1_epi8(0x30);
        return {_mm256_or_si256(lo.lo, _mm256_and_si256(hi2(h.lo, s), m)), _mm256_or_si256(lo.hi, _mm256_and_si256(hi2(h.hi, s), m))};
    }
    static MOE_ALWAYS_INLINE B crumb(const B& x, int s) noexcept {
        const __m256i m = _mm256_set1_epi8(3);
        const __m128i n = _mm_cvtsi32_si128(2 * s);
        return {_mm256_and_si256(_mm256_srl_epi16(x.lo, n), m), _mm256_and_si256(_mm256_srl_epi16(x.hi, n), m)};
    }
    static MOE_ALWAYS_INLINE B with_bit2(const B& c, const B& h, int s) noexcept {
        const __m256i one = _mm256_set1_epi8(1);
        const __m128i n = _mm_cvtsi32_si128(s);
        return {_mm256_or_si256(c.lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h.lo, n), one), 2)),
                _mm256_or_si256(c.hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h.hi, n), one), 2))};
    }
    static MOE_ALWAYS_INLINE B table16(const std::uint8_t* t) noexcept {
        const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
        return {v, v};
    }
    static MOE_ALWAYS_INLINE B lut(const B& x, const B& t) noexcept {
        return {_mm256_shuffle_epi8(t.lo, x.lo), _mm256_shuffle_epi8(t.hi, x.hi)};
    }
    static MOE_ALWAYS_INLINE I zero() noexcept { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
    static MOE_ALWAYS_INLINE I splat(const std::int32_t* p) noexcept {
        const __m256i v = _mm256_set1_epi32(*p);
        return {v, v};
    }
    static MOE_ALWAYS_INLINE __m256i dp4(__m256i acc, __m256i w, __m256i ae, __m256i ao) noexcept {
        const __m256i we = _mm256_and_si256(w, _mm256_set1_epi16(0x00ff)), wo = _mm256_srli_epi16(w, 8);
        return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(we, ae), _mm256_madd_epi16(wo, ao)));
    }
    static MOE_ALWAYS_INLINE I dpbusd(const I& acc, const B& w, std::int32_t a4) noexcept {
        const __m256i v = _mm256_set1_epi32(a4);
        const __m256i ae = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);  // a0, a2 as int16
        const __m256i ao = _mm256_srai_epi16(v, 8);                         // a1, a3
        return {dp4(acc.lo, w.lo, ae, ao), dp4(acc.hi, w.hi, ae, ao)};
    }
    static F dpbf16(const F& acc, const B& w, std::uint32_t a2) noexcept {
        generic_qlanes::F a;
        generic_qlanes::B b;
        store(a.v, acc);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.b), w.lo);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.b + 32), w.hi);
        return load(generic_qlanes::dpbf16(a, b, a2).v);
    }
    static MOE_ALWAYS_INLINE F fadd(const F& a, const F& b) noexcept { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
    static MOE_ALWAYS_INLINE I sub(const I& x, std::int32_t c) noexcept {
        const __m256i v = _mm256_set1_epi32(c);
        return {_mm256_sub_epi32(x.lo, v), _mm256_sub_epi32(x.hi, v)};
    }
    static MOE_ALWAYS_INLINE I add(const I& x, const I& y) noexcept { return {_mm256_add_epi32(x.lo, y.lo), _mm256_add_epi32(x.hi, y.hi)}; }
    static MOE_ALWAYS_INLINE I mullo(const I& x, const I& y) noexcept {
        return {_mm256_mullo_epi32(x.lo, y.lo), _mm256_mullo_epi32(x.hi, y.hi)};
    }
    static MOE_ALWAYS_INLINE I mul_scalar(const I& x, std::int32_t c) noexcept {
        const __m256i v = _mm256_set1_epi32(c);
        return {_mm256_mullo_epi32(x.lo, v), _mm256_mullo_epi32(x.hi, v)};
    }
    static MOE_ALWAYS_INLINE I u8x16(const std::uint8_t* p) noexcept { return {_mm256_cvtepu8_epi32(ld8(p)), _mm256_cvtepu8_epi32(ld8(p + 8))}; }
    static MOE_ALWAYS_INLINE I s8x16(const std::uint8_t* p) noexcept { return {_mm256_cvtepi8_epi32(ld8(p)), _mm256_cvtepi8_epi32(ld8(p + 8))}; }
    static MOE_ALWAYS_INLINE F cvt(const I& x) noexcept { return {_mm256_cvtepi32_ps(x.lo), _mm256_cvtepi32_ps(x.hi)}; }
    static MOE_ALWAYS_INLINE F fzero() noexcept { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
    static MOE_ALWAYS_INLINE F bcast(float x) noexcept { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
    static MOE_ALWAYS_INLINE F fma(const F& a, const F& b, const F& c) noexcept {
        return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
    }
    static MOE_ALWAYS_INLINE F mul(const F& a, const F& b) noexcept { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
    static MOE_ALWAYS_INLINE F neg(const F& a) noexcept {
        const __m256 s = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN));
        return {_mm256_xor_ps(a.lo, s), _mm256_xor_ps(a.hi, s)};
    }
    static MOE_ALWAYS_INLINE F fp16x16(const std::uint8_t* p) noexcept {
        return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))};
    }
    static MOE_ALWAYS_INLINE F f32x16(const std::uint8_t* p) noexcept {
        return {_mm256_loadu_ps(reinterpret_cast<const float*>(p)), _mm256_loadu_ps(reinterpret_cast<const float*>(p + 32))};
    }
    static MOE_ALWAYS_INLINE F load(const float* p) noexcept { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
    static MOE_ALWAYS_INLINE void store(float* p, const F& x) noexcept {
        _mm256_storeu_ps(p, x.lo);
        _mm256_storeu_ps(p + 8, x.hi);
    }
    static MOE_ALWAYS_INLINE F e4m3x16_div256(const std::uint8_t* p) noexcept {
        // As avx512_qlanes: e4m3 bits placed as fp16 bits are the value times 2^-8 (exact).
        const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m256i h = _mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16(static_cast<short>(0xBFFF)));
        return {_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1))};
    }
    static MOE_ALWAYS_INLINE F e4m3x16(const std::uint8_t* p) noexcept {
        const F v = e4m3x16_div256(p);
        const __m256 k = _mm256_set1_ps(256.0f);
        return {_mm256_mul_ps(v.lo, k), _mm256_mul_ps(v.hi, k)};
    }
    static MOE_ALWAYS_INLINE __m256 e2m1x8(__m128i c8, bool high) noexcept {
        const __m256 lut = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
        __m256i c = _mm256_cvtepu8_epi32(c8);
        if (high) c = _mm256_srli_epi32(c, 4);
        const __m256 mag = _mm256_permutevar8x32_ps(lut, _mm256_and_si256(c, _mm256_set1_epi32(7)));
        const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(8)), 28);
        return _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
    }
    static MOE_ALWAYS_INLINE F e2m1x16(const std::uint8_t* p, bool high) noexcept { return {e2m1x8(ld8(p), high), e2m1x8(ld8(p + 8), high)}; }
    static MOE_ALWAYS_INLINE void e2m1x16x2(const std::uint8_t* p, F& lo, F& hi) noexcept {
        const __m128i a = ld8(p), b = ld8(p + 8);
        lo = {e2m1x8(a, false), e2m1x8(b, false)};
        hi = {e2m1x8(a, true), e2m1x8(b, true)};
    }
    static MOE_ALWAYS_INLINE __m256 e8m0x8(__m128i b8) noexcept {
        const __m256i e = _mm256_cvtepu8_epi32(b8);
        const __m256 normal = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
        const __m256 z = _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
        return _mm256_blendv_ps(normal, _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000)), z);  // e = 0: 2^-127
    }
    static MOE_ALWAYS_INLINE F e8m0x16(const std::uint8_t* p) noexcept { return {e8m0x8(ld8(p)), e8m0x8(ld8(p + 8))}; }
};
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#define MOE_HAVE_NEON_QLANES 1
/// The integer dot product `neon_qlanes::dpbusd` is built on, from the target flags.
enum class neon_dot {
    widen,    ///< plain NEON: u8 -> u16 widening, 16-bit multiplies, pairwise long adds
    sdot,     ///< FEAT_DotProd: SDOT on the codes with their top bit flipped, plus 128 * sum(a)
    usdot,    ///< FEAT_I8MM: USDOT, u8 x s8 directly (vpdpbusd's own semantics)
};

/// AArch64 NEON lanes: four 128-bit registers per vector (columns 4q..4q+3 in register q; a B
/// register holds those 4 columns x 4 k). Every integer op is exact and every float op one
/// IEEE operation per lane, so the bits equal generic_qlanes' for every `Dot`.
template <neon_dot Dot>
struct neon_qlanes_t {
    static constexpr bool simd = true;
    static constexpr neon_dot dot = Dot;
    struct B {
        uint8x16_t v[4];
    };
    struct I {
        int32x4_t v[4];
    };
    struct F {
        float32x4_t v[4];
    };
    template <class T, class Fn>
    static MOE_ALWAYS_INLINE T map(Fn&& fn) noexcept {
        T r;
        for (int q = 0; q < 4; ++q) r.v[q] = fn(q);
        return r;
    }
    static MOE_ALWAYS_INLINE B load_b(const std::uint8_t* p) noexcept {
        return map<B>([&](int q) { return vld1q_u8(p + 16 * q); });
    }
    static MOE_ALWAYS_INLINE B lo4(const B& x) noexcept {
        return map<B>([&](int q) { return vandq_u8(x.v[q], vdupq_n_u8(15)); });
    }
    static MOE_ALWAYS_INLINE B hi4(const B& x) noexcept {
        return map<B>([&](int q) { return vshrq_n_u8(x.v[q], 4); });
    }
    /// x >> n per byte for a run-time n (USHL by a negative amount).
    static MOE_ALWAYS_INLINE uint8x16_t shr(uint8x16_t x, int n) noexcept {
        return vshlq_u8(x, vdupq_n_s8(static_cast<std::int8_t>(-n)));
    }
    static MOE_ALWAYS_INLINE B with_hi2(const B& lo, const B& h, int s) noexcept {
        // SLI #4 keeps lo's low nibble and inserts the 2 bits above it: lo | (x << 4) for lo < 16.
        return map<B>([&](int q) { return vsliq_n_u8(lo.v[q], vandq_u8(shr(h.v[q], 2 * s), vdupq_n_u8(3)), 4); });
    }
    static MOE_ALWAYS_INLINE B crumb(const B& x, int s) noexcept {
        return map<B>([&](int q) { return vandq_u8(shr(x.v[q], 2 * s), vdupq_n_u8(3)); });
    }
    static MOE_ALWAYS_INLINE B with_bit2(const B& c, const B& h, int s) noexcept {
        // SLI #2: c | (x << 2) for c < 4.
        return map<B>([&](int q) { return vsliq_n_u8(c.v[q], vandq_u8(shr(h.v[q], s), vdupq_n_u8(1)), 2); });
    }
    static MOE_ALWAYS_INLINE B table16(const std::uint8_t* t) noexcept {
        const uint8x16_t v = vld1q_u8(t);
        return {{v, v, v, v}};
    }
    static MOE_ALWAYS_INLINE B lut(const B& x, const B& t) noexcept {
        return map<B>([&](int q) { return vqtbl1q_u8(t.v[q], x.v[q]); });  // TBL
    }
    static MOE_ALWAYS_INLINE I zero() noexcept { return map<I>([](int) { return vdupq_n_s32(0); }); }
    static MOE_ALWAYS_INLINE I splat(const std::int32_t* p) noexcept {
        const int32x4_t v = vld1q_dup_s32(p);
        return map<I>([&](int) { return v; });
    }
    static MOE_ALWAYS_INLINE I dpbusd(const I& acc, const B& w, std::int32_t a4) noexcept {
        const int8x16_t a = vreinterpretq_s8_s32(vdupq_n_s32(a4));
        if constexpr (Dot == neon_dot::usdot) {
#if defined(__ARM_FEATURE_MATMUL_INT8)
            return map<I>([&](int q) { return vusdotq_s32(acc.v[q], w.v[q], a); });
#else
            static_assert(Dot != neon_dot::usdot, "moe: neon_dot::usdot needs a target with +i8mm");
            return acc;
#endif
        } else if constexpr (Dot == neon_dot::sdot) {
#if defined(__ARM_FEATURE_DOTPROD)
            // w = (w ^ 0x80) as int8 + 128: sum_j w_j a_j = sdot(w ^ 0x80, a) + 128 * sum_j a_j,
            // exact in 32-bit integers (wrapping, as the other lanes).
            std::int8_t b[4];
            std::memcpy(b, &a4, 4);
            const int32x4_t c = vdupq_n_s32(128 * (b[0] + b[1] + b[2] + b[3]));
            return map<I>([&](int q) {
                const int8x16_t ws = vreinterpretq_s8_u8(veorq_u8(w.v[q], vdupq_n_u8(0x80)));
                return vaddq_s32(vdotq_s32(acc.v[q], ws, a), c);
            });
#else
            static_assert(Dot != neon_dot::sdot, "moe: neon_dot::sdot needs a target with +dotprod");
            return acc;
#endif
        } else {
            // Widening: u8 x s8 products fit int16 exactly (255 x -128 = -32640), pairs of
            // them int32; two pairwise adds give each column's sum of 4.
            const int16x8_t a16 = vmovl_s8(vget_low_s8(a));  // a0 a1 a2 a3 a0 a1 a2 a3
            return map<I>([&](int q) {
                const int16x8_t w0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(w.v[q])));
                const int16x8_t w1 = vreinterpretq_s16_u16(vmovl_high_u8(w.v[q]));
                const int32x4_t p0 = vpaddlq_s16(vmulq_s16(w0, a16)), p1 = vpaddlq_s16(vmulq_s16(w1, a16));
                return vaddq_s32(acc.v[q], vpaddq_s32(p0, p1));
            });
        }
    }
    /// Subnormal -> signed zero, bit-wise (the reference's DAZ / FTZ), without touching FPCR.
    static MOE_ALWAYS_INLINE float32x4_t flush(float32x4_t x) noexcept {
        const uint32x4_t u = vreinterpretq_u32_f32(x);
        const uint32x4_t tiny = vceqq_u32(vandq_u32(u, vdupq_n_u32(0x7f800000u)), vdupq_n_u32(0));
        return vreinterpretq_f32_u32(vbslq_u32(tiny, vandq_u32(u, vdupq_n_u32(0x80000000u)), u));
    }
    /// The reference's vdpbf16ps order: odd k first, then even k, each one FMLA with DAZ in and
    /// FTZ out. (BFDOT rounds a pair's sum once and so gives other bits; see docs/formats.md.)
    static MOE_ALWAYS_INLINE F dpbf16(const F& acc, const B& w, std::uint32_t a2) noexcept {
        const float32x4_t ae = flush(vreinterpretq_f32_u32(vdupq_n_u32(a2 << 16)));
        const float32x4_t ao = flush(vreinterpretq_f32_u32(vdupq_n_u32(a2 & 0xffff0000u)));
        return map<F>([&](int q) {
            const uint32x4_t u = vreinterpretq_u32_u8(w.v[q]);
            const float32x4_t we = flush(vreinterpretq_f32_u32(vshlq_n_u32(u, 16)));
            const float32x4_t wo = flush(vreinterpretq_f32_u32(vandq_u32(u, vdupq_n_u32(0xffff0000u))));
            const float32x4_t r = flush(vfmaq_f32(flush(acc.v[q]), wo, ao));
            return flush(vfmaq_f32(r, we, ae));
        });
    }
    static MOE_ALWAYS_INLINE F fadd(const F& a, const F& b) noexcept {
        return map<F>([&](int q) { return vaddq_f32(a.v[q], b.v[q]); });
    }
    static MOE_ALWAYS_INLINE I sub(const I& x, std::int32_t c) noexcept {
        return map<I>([&](int q) { return vsubq_s32(x.v[q], vdupq_n_s32(c)); });
    }
    static MOE_ALWAYS_INLINE I add(const I& x, const I& y) noexcept {
        return map<I>([&](int q) { return vaddq_s32(x.v[q], y.v[q]); });
    }
    static MOE_ALWAYS_INLINE I mullo(const I& x, const I& y) noexcept {
        return map<I>([&](int q) { return vmulq_s32(x.v[q], y.v[q]); });
    }
    static MOE_ALWAYS_INLINE I mul_scalar(const I& x, std::int32_t c) noexcept {
        return map<I>([&](int q) { return vmulq_n_s32(x.v[q], c); });
    }
    static MOE_ALWAYS_INLINE I u8x16(const std::uint8_t* p) noexcept {
        const uint8x16_t b = vld1q_u8(p);
        const uint16x8_t lo = vmovl_u8(vget_low_u8(b)), hi = vmovl_high_u8(b);
        return {{vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))), vreinterpretq_s32_u32(vmovl_high_u16(lo)),
                 vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))), vreinterpretq_s32_u32(vmovl_high_u16(hi))}};
    }
    static MOE_ALWAYS_INLINE I s8x16(const std::uint8_t* p) noexcept {
        const int8x16_t b = vreinterpretq_s8_u8(vld1q_u8(p));
        const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
        return {{vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)), vmovl_high_s16(hi)}};
    }
    static MOE_ALWAYS_INLINE F cvt(const I& x) noexcept {
        return map<F>([&](int q) { return vcvtq_f32_s32(x.v[q]); });
    }
    static MOE_ALWAYS_INLINE F fzero() noexcept { return map<F>([](int) { return vdupq_n_f32(0.0f); }); }
    static MOE_ALWAYS_INLINE F bcast(float x) noexcept { return map<F>([&](int) { return vdupq_n_f32(x); }); }
    static MOE_ALWAYS_INLINE F fma(const F& a, const F& b, const F& c) noexcept {
        return map<F>([&](int q) { return vfmaq_f32(c.v[q], a.v[q], b.v[q]); });
    }
    static MOE_ALWAYS_INLINE F mul(const F& a, const F& b) noexcept {
        return map<F>([&](int q) { return vmulq_f32(a.v[q], b.v[q]); });
    }
    static MOE_ALWAYS_INLINE F neg(const F& a) noexcept {
        return map<F>([&](int q) { return vnegq_f32(a.v[q]); });  // FNEG flips the sign bit only
    }
    static MOE_ALWAYS_INLINE F fp16x16(const std::uint8_t* p) noexcept {
        // FCVTL: exact, subnormals included (FPCR.FZ16 and AHP are clear on Linux and macOS).
        return map<F>([&](int q) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p) + 4 * q))); });
    }
    static MOE_ALWAYS_INLINE F f32x16(const std::uint8_t* p) noexcept {
        return map<F>([&](int q) { return vreinterpretq_f32_u8(vld1q_u8(p + 16 * q)); });
    }
    static MOE_ALWAYS_INLINE F load(const float* p) noexcept {
        return map<F>([&](int q) { return vld1q_f32(p + 4 * q); });
    }
    static MOE_ALWAYS_INLINE void store(float* p, const F& x) noexcept {
        for (int q = 0; q < 4; ++q) vst1q_f32(p + 4 * q, x.v[q]);
    }
    static MOE_ALWAYS_INLINE F e4m3x16_div256(const std::uint8_t* p) noexcept {
        // As the x86 lanes: e4m3 bits placed as fp16 bits are the value times 2^-8 (exact).
        const uint8x16_t b = vld1q_u8(p);
        F r;
        for (int h = 0; h < 2; ++h) {
            const uint16x8_t w = h ? vmovl_high_u8(b) : vmovl_u8(vget_low_u8(b));
            const uint16x8_t f16 = vorrq_u16(vshlq_n_u16(vandq_u16(w, vdupq_n_u16(0x80)), 8), vshlq_n_u16(vandq_u16(w, vdupq_n_u16(0x7f)), 7));
            const float16x8_t hv = vreinterpretq_f16_u16(f16);
            r.v[2 * h] = vcvt_f32_f16(vget_low_f16(hv));
            r.v[2 * h + 1] = vcvt_high_f32_f16(hv);
        }
        return r;
    }
    static MOE_ALWAYS_INLINE F e4m3x16(const std::uint8_t* p) noexcept {  // the multiplication by 2^8 is exact
        F r = e4m3x16_div256(p);
        for (int q = 0; q < 4; ++q) r.v[q] = vmulq_n_f32(r.v[q], 256.0f);
        return r;
    }
    /// 16 E2M1 codes -> float: every E2M1 value is a bf16 (its float bits end in 16 zeros), so
    /// two TBLs give the bf16's high and low bytes and a zip and a widening shift the floats.
    static MOE_ALWAYS_INLINE F e2m1_codes(uint8x16_t c) noexcept {
        static constexpr std::uint8_t hb[16] = {0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40, 0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0};
        static constexpr std::uint8_t lb[16] = {0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0, 0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0};
        const uint8x16_t h = vqtbl1q_u8(vld1q_u8(hb), c), l = vqtbl1q_u8(vld1q_u8(lb), c);
        const uint16x8_t b0 = vreinterpretq_u16_u8(vzip1q_u8(l, h)), b1 = vreinterpretq_u16_u8(vzip2q_u8(l, h));
        return {{vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b0), 16)), vreinterpretq_f32_u32(vshll_high_n_u16(b0, 16)),
                 vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b1), 16)), vreinterpretq_f32_u32(vshll_high_n_u16(b1, 16))}};
    }
    static MOE_ALWAYS_INLINE F e2m1x16(const std::uint8_t* p, bool high) noexcept {
        const uint8x16_t b = vld1q_u8(p);
        return e2m1_codes(high ? vshrq_n_u8(b, 4) : vandq_u8(b, vdupq_n_u8(15)));
    }
    static MOE_ALWAYS_INLINE void e2m1x16x2(const std::uint8_t* p, F& lo, F& hi) noexcept {
        const uint8x16_t b = vld1q_u8(p);
        lo = e2m1_codes(vandq_u8(b, vdupq_n_u8(15)));
        hi = e2m1_codes(vshrq_n_u8(b, 4));
    }
    static MOE_ALWAYS_INLINE F e8m0x16(const std::uint8_t* p) noexcept {
        const I e = u8x16(p);
        return map<F>([&](int q) {
            const uint32x4_t u = vreinterpretq_u32_s32(e.v[q]);
            const uint32x4_t z = vceqq_u32(u, vdupq_n_u32(0));
            return vreinterpretq_f32_u32(vbslq_u32(z, vdupq_n_u32(0x00400000u), vshlq_n_u32(u, 23)));  // e = 0: 2^-127
        });
    }
};

/// The best integer dot product the translation unit's flags allow.
inline constexpr neon_dot neon_best_dot =
#if defined(__ARM_FEATURE_MATMUL_INT8)
    neon_dot::usdot;
#elif defined(__ARM_FEATURE_DOTPROD)
    neon_dot::sdot;
#else
    neon_dot::widen;
#endif
using neon_qlanes = neon_qlanes_t<neon_best_dot>;
#endif

namespace detail {
template <class Arch, class = void>
struct qlanes_for {
    using type = generic_qlanes;
};
template <class Base, class Arch>
inline constexpr bool arch_from_v = std::is_base_of<Base, Arch>::value;
#if defined(MOE_HAVE_AVX512_QLANES) && XSIMD_WITH_AVX512BW
template <class Arch>
struct qlanes_for<Arch, std::enable_if_t<arch_from_v<xsimd::avx512bw, Arch>>> {
    using type = avx512_qlanes;
};
#endif
#if defined(MOE_HAVE_AVX2_QLANES) && XSIMD_WITH_AVX2
// AVX2 archs, and AVX-512 archs in a translation unit built without VNNI.
template <class Arch>
struct qlanes_for<Arch, std::enable_if_t<arch_from_v<xsimd::avx2, Arch>
#if defined(MOE_HAVE_AVX512_QLANES) && XSIMD_WITH_AVX512BW
                                         && !arch_from_v<xsimd::avx512bw, Arch>
#endif
                                         >> {
    using type = avx2_qlanes;
};
#if XSIMD_WITH_AVX512BW && !defined(MOE_HAVE_AVX512_QLANES)
template <class Arch>
struct qlanes_for<Arch, std::enable_if_t<arch_from_v<xsimd::avx512bw, Arch>>> {
    using type = avx2_qlanes;
};
#endif
#endif
#if defined(MOE_HAVE_NEON_QLANES) && XSIMD_WITH_NEON64
template <class Arch>
struct qlanes_for<Arch, std::enable_if_t<arch_from_v<xsimd::neon64, Arch>>> {
    using type = neon_qlanes;
};
#endif
}  // namespace detail

/// The lanes the quantized kernels use for `Arch`: AVX-512 VNNI when `Arch` is an AVX-512BW
/// arch and the translation unit is built with VNNI (-mavx512vnni, or -march=native on a CPU
/// that has it); AVX2 (+FMA, F16C) for AVX2 archs and for AVX-512 archs built without VNNI;
/// `neon_qlanes` (USDOT with +i8mm, SDOT with +dotprod, widening multiplies otherwise) for
/// `xsimd::neon64`; the portable reference otherwise. All give the same bits.
template <class Arch>
using qlanes_t = typename detail::qlanes_for<Arch>::type;

}  // namespace moe::kernels::formats
