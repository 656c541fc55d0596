/// @file arch.hpp
/// Instruction-set tags: xsimd's own (`xsimd::avx512bw`, `xsimd::fma3<xsimd::avx2>`, ...) plus
/// `moe::scalar`, the portable reference every SIMD path is tested against.
#pragma once

#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace moe {

/// The scalar reference "arch": plain C++, one lane. It implements every kernel and is the
/// oracle in tests.
struct scalar {
    static constexpr bool supported() noexcept { return true; }
    static constexpr bool available() noexcept { return true; }
    static constexpr char const* name() noexcept { return "scalar"; }
};

namespace detail {

template <class Arch>
struct is_fused_fma_arch
    : std::integral_constant<bool,
#if XSIMD_WITH_AVX512F
                             std::is_base_of<xsimd::avx512f, Arch>::value ||
#endif
#if XSIMD_WITH_FMA3_AVX2
                             std::is_base_of<xsimd::fma3<xsimd::avx2>, Arch>::value ||
#endif
#if XSIMD_WITH_FMA3_AVX
                             std::is_base_of<xsimd::fma3<xsimd::avx>, Arch>::value ||
#endif
#if XSIMD_WITH_FMA3_SSE
                             std::is_base_of<xsimd::fma3<xsimd::sse4_2>, Arch>::value ||
#endif
                             false> {
};

}  // namespace detail

/// True when moe has a SIMD implementation for `Arch`. The SIMD paths need a fused multiply-add
/// (so that they round exactly like the scalar reference, which uses std::fma); for any other
/// xsimd arch the kernels run the scalar code, so results never depend on the arch.
template <class Arch>
inline constexpr bool has_simd_path_v = detail::is_fused_fma_arch<Arch>::value;

/// The arch the convenience overloads use: xsimd's best arch for the compile flags when moe has
/// a SIMD path for it, `moe::scalar` otherwise (e.g. a plain x86-64 build without -mfma).
using default_arch =
    std::conditional_t<has_simd_path_v<xsimd::default_arch>, xsimd::default_arch, scalar>;

namespace detail {
/// The CPU's features as GCC / Clang read them (cpuid and, for AVX / AVX-512, the OS's
/// XCR0 state). xsimd 8.1's own detection reads AVX from the wrong cpuid leaf (0x80000001
/// instead of 1), so on CPUs where that bit is clear it reports neither AVX nor AVX2.
struct cpu_features {
    bool sse2, sse4_2, avx, fma, avx2, avx512f, avx512cd, avx512dq, avx512bw;
};
[[nodiscard]] inline cpu_features read_cpu_features() noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return {__builtin_cpu_supports("sse2") != 0,     __builtin_cpu_supports("sse4.2") != 0,   __builtin_cpu_supports("avx") != 0,
            __builtin_cpu_supports("fma") != 0,      __builtin_cpu_supports("avx2") != 0,     __builtin_cpu_supports("avx512f") != 0,
            __builtin_cpu_supports("avx512cd") != 0, __builtin_cpu_supports("avx512dq") != 0, __builtin_cpu_supports("avx512bw") != 0};
#else
    const auto a = xsimd::available_architectures();
    return {a.sse2 != 0, a.sse4_2 != 0, a.avx != 0, a.fma3_sse != 0, a.avx2 != 0, a.avx512f != 0, a.avx512cd != 0, a.avx512dq != 0, a.avx512bw != 0};
#endif
}
}  // namespace detail

/// Whether the CPU running this program can execute code built for `Arch`.
template <class Arch>
[[nodiscard]] inline bool arch_available() noexcept {
    if constexpr (std::is_same<Arch, scalar>::value) {
        return true;
    } else {
        const detail::cpu_features a = detail::read_cpu_features();
        bool ok = true;
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of<xsimd::avx512bw, Arch>::value) ok = ok && a.avx512bw;
        if constexpr (std::is_base_of<xsimd::avx512dq, Arch>::value) ok = ok && a.avx512dq;
        if constexpr (std::is_base_of<xsimd::avx512cd, Arch>::value) ok = ok && a.avx512cd;
        if constexpr (std::is_base_of<xsimd::avx512f, Arch>::value) ok = ok && a.avx512f && a.fma && a.avx2;
#endif
#if XSIMD_WITH_FMA3_AVX2
        if constexpr (std::is_base_of<xsimd::fma3<xsimd::avx2>, Arch>::value) ok = ok && a.fma && a.avx2;
#endif
#if XSIMD_WITH_AVX2
        if constexpr (std::is_base_of<xsimd::avx2, Arch>::value) ok = ok && a.avx2;
#endif
#if XSIMD_WITH_AVX
        if constexpr (std::is_base_of<xsimd::avx, Arch>::value) ok = ok && a.avx;
#endif
#if XSIMD_WITH_FMA3_SSE
        if constexpr (std::is_base_of<xsimd::fma3<xsimd::sse4_2>, Arch>::value) ok = ok && a.fma && a.sse4_2;
#endif
#if XSIMD_WITH_SSE2
        if constexpr (std::is_base_of<xsimd::sse4_2, Arch>::value) ok = ok && a.sse4_2;
        if constexpr (std::is_base_of<xsimd::sse2, Arch>::value) ok = ok && a.sse2;
#endif
        return ok;
    }
}

}  // namespace moe
