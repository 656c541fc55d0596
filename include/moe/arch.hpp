/// @file arch.hpp
/// Instruction-set tags: xsimd's own (`xsimd::avx512bw`, `xsimd::fma3<xsimd::avx2>`, ...) plus
/// `moe::scalar`, the portable reference every SIMD path is tested against.
#pragma once

#include <string>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

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
#if XSIMD_WITH_NEON64
                             // AArch64's Advanced SIMD always has a fused multiply-add (FMLA).
                             std::is_base_of<xsimd::neon64, Arch>::value ||
#endif
                             false> {
};

}  // namespace detail

/// True when moe has a SIMD implementation for `Arch` (x86 with FMA3 or AVX-512, and AArch64's
/// `xsimd::neon64`). The SIMD paths need a fused multiply-add
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

/// The AArch64 extensions moe's kernels use, as the OS reports them: Linux's hardware
/// capabilities (getauxval(AT_HWCAP / AT_HWCAP2)) or macOS's `hw.optional.arm.FEAT_*` sysctls.
/// All false on other CPUs.
struct arm_features {
    bool asimd = false;    ///< Advanced SIMD (NEON): always there on AArch64
    bool dotprod = false;  ///< SDOT / UDOT (Armv8.2 FEAT_DotProd)
    bool i8mm = false;     ///< USDOT, SMMLA / USMMLA (Armv8.6 FEAT_I8MM)
    bool bf16 = false;     ///< BFDOT / BFMMLA (Armv8.6 FEAT_BF16)
    bool sve = false;      ///< SVE (not used by the kernels; reported)
};

namespace detail {
#if defined(__aarch64__) && defined(__APPLE__)
inline bool sysctl_flag(const char* name) noexcept {
    int v = 0;
    std::size_t n = sizeof v;
    return sysctlbyname(name, &v, &n, nullptr, 0) == 0 && v != 0;
}
#endif
}  // namespace detail

[[nodiscard]] inline arm_features read_arm_features() noexcept {
    arm_features f;
#if defined(__aarch64__) && defined(__linux__)
    // Bit positions from the kernel's uapi asm/hwcap.h (stable ABI), spelled out so that
    // older C libraries' headers need not define them.
    const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    f.asimd = (hw & (1ul << 1)) != 0;     // HWCAP_ASIMD
    f.dotprod = (hw & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
    f.sve = (hw & (1ul << 22)) != 0;      // HWCAP_SVE
    f.i8mm = (hw2 & (1ul << 13)) != 0;    // HWCAP2_I8MM
    f.bf16 = (hw2 & (1ul << 14)) != 0;    // HWCAP2_BF16
#elif defined(__aarch64__) && defined(__APPLE__)
    f.asimd = true;
    f.dotprod = detail::sysctl_flag("hw.optional.arm.FEAT_DotProd");
    f.i8mm = detail::sysctl_flag("hw.optional.arm.FEAT_I8MM");
    f.bf16 = detail::sysctl_flag("hw.optional.arm.FEAT_BF16");
#elif defined(__aarch64__)
    f.asimd = true;
#endif
    return f;
}

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
#if XSIMD_WITH_NEON64
        if constexpr (std::is_base_of<xsimd::neon64, Arch>::value) {
            const arm_features f = read_arm_features();
            ok = ok && f.asimd;
            // Code built with these extensions (the quantized kernels' lanes follow the flags).
#if defined(__ARM_FEATURE_DOTPROD)
            ok = ok && f.dotprod;
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8)
            ok = ok && f.i8mm;
#endif
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
            ok = ok && f.bf16;
#endif
        }
#endif
        static_cast<void>(a);
        return ok;
    }
}

/// What the running build uses, for tools' first lines: the default arch's name and, on AArch64,
/// the extensions this translation unit was built for and those the CPU reports, e.g.
/// "arm64+neon (built for +dotprod+i8mm; cpu has +dotprod+i8mm+bf16+sve)".
[[nodiscard]] inline std::string arch_description() {
    std::string s = default_arch::name();
#if defined(__aarch64__)
    std::string built, has;
#if defined(__ARM_FEATURE_DOTPROD)
    built += "+dotprod";
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8)
    built += "+i8mm";
#endif
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
    built += "+bf16";
#endif
    const arm_features f = read_arm_features();
    if (f.dotprod) has += "+dotprod";
    if (f.i8mm) has += "+i8mm";
    if (f.bf16) has += "+bf16";
    if (f.sve) has += "+sve";
    s += " (built for " + (built.empty() ? std::string("plain NEON") : built) + "; cpu has " +
         (has.empty() ? std::string("plain NEON") : has) + ")";
#endif
    return s;
}

}  // namespace moe
