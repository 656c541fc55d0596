/// @file analysis/machine.hpp
/// This machine's limits, measured where a program runs, to state a kernel's speed as a
/// fraction of what binds it: the fp32 FMA peak, the int8 VNNI peak (`vpdpbusd`), the bf16 dot
/// peak (`vdpbf16ps`), the read bandwidth, the L3 size; and `prefill_unit<W>` names the unit a
/// weight format's prefill runs on (integer formats on VNNI, bf16:dot on vdpbf16ps, the rest on
/// fp32 FMAs). Each peak is a register-only loop of independent chains on `threads` threads
/// (OpenMP where built with it; one thread otherwise). Used by bench/ and mixtral-layer.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../arch.hpp"
#include "../detail/lane_math.hpp"
#include "../kernels/formats.hpp"
#include "../kernels/pack.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__AVX512BF16__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

namespace moe::machine {

namespace detail {
/// Seconds for `body()` to run on `threads` threads at once (OpenMP; without it one thread,
/// and `threads` is set to 1).
template <class Body>
double time_on_threads(int& threads, Body&& body) {
    const auto t0 = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
    body();
#else
    threads = 1;
    body();
#endif
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
inline void keep(float v) {
    volatile float sink = v;
    static_cast<void>(sink);
}
}  // namespace detail

/// fp32 FLOP/s of Arch's FMAs on `threads` threads (16 independent chains each, `iters` rounds).
template <class Arch = default_arch>
double fma_peak(int threads = 1, long iters = 20'000'000) {
    using O = moe::detail::lane_ops<Arch>;
    using V = typename O::V;
    const double seconds = detail::time_on_threads(threads, [&] {
        V a[16];
        for (int i = 0; i < 16; ++i) a[i] = O::splat(1.0f + 1e-7f * static_cast<float>(i));
        const V m = O::splat(0.9999999f), c = O::splat(1e-7f);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < 16; ++i) a[i] = O::fmadd(a[i], m, c);
        V sum = a[0];
        for (int i = 1; i < 16; ++i) sum = sum + a[i];  // every chain is live
        alignas(64) float tmp[O::width];
        O::store(tmp, sum);
        detail::keep(tmp[0]);
    });
    return 2.0 * O::width * 16 * static_cast<double>(iters) * threads / seconds;
}

/// Integer OP/s of AVX-512 `vpdpbusd` (128 OP each: 64 u8 x s8 products, each a multiply and
/// an add) on `threads` threads: the peak of the integer weight formats. 0 in a build without
/// AVX-512 VNNI.
inline double vnni_peak(int threads = 1, long iters = 20'000'000) {
#if defined(__AVX512VNNI__)
    const double seconds = detail::time_on_threads(threads, [&] {
        __m512i a[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_epi32(i);
        const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbusd_epi32(a[i], x, y);
        int s = 0;
        for (int i = 0; i < 16; ++i) s += _mm_cvtsi128_si32(_mm512_castsi512_si128(a[i]));
        detail::keep(static_cast<float>(s));
    });
    return 128.0 * 16 * static_cast<double>(iters) * threads / seconds;
#else
    static_cast<void>(threads);
    static_cast<void>(iters);
    return 0.0;
#endif
}

/// FLOP/s of AVX-512 `vdpbf16ps` (64 FLOP each: 16 lanes x 2 products x multiply-add) on
/// `threads` threads: the peak of the bf16:dot format. 0 in a build without AVX512-BF16.
inline double bf16_dot_peak(int threads = 1, long iters = 20'000'000) {
#if defined(__AVX512BF16__)
    const double seconds = detail::time_on_threads(threads, [&] {
        __m512 a[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
        const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33803380);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
        float s = 0;
        for (int i = 0; i < 16; ++i) s += _mm512_cvtss_f32(a[i]);
        detail::keep(s);
    });
    return 64.0 * 16 * static_cast<double>(iters) * threads / seconds;
#else
    static_cast<void>(threads);
    static_cast<void>(iters);
    return 0.0;
#endif
}

/// One pass of `threads` threads reading disjoint parts of `buf` (4 streams each, every line
/// prefetched 2 KiB ahead into L1, as the quantized kernels prefetch their panels: the most
/// their access patterns could draw; prefetching one line in four, 1 KiB ahead, read ~25%
/// less on a Zen 5 VM and let k-quant decode exceed it); returns seconds.
inline double read_pass(const std::vector<float>& buf, int threads = 1) {
    using O = moe::detail::lane_ops<default_arch>;
    using V = typename O::V;
    const std::size_t n = buf.size();
    auto part = [&](std::size_t b, std::size_t e) {
        V s[4] = {O::splat(0), O::splat(0), O::splat(0), O::splat(0)};
        const std::size_t len = (e - b) / 4 / (4 * O::width) * (4 * O::width);
        for (std::size_t i = 0; i < len; i += 4 * O::width)
            for (std::size_t st = 0; st < 4; ++st) {
                const float* p = buf.data() + b + st * len + i;
                for (std::size_t l = 0; l < 4 * O::width; l += 16) __builtin_prefetch(p + 512 + l, 0, 3);
                for (std::size_t j = 0; j < 4; ++j) s[j] = s[j] + O::load(p + j * O::width);
            }
        alignas(64) float tmp[O::width];
        O::store(tmp, s[0] + s[1] + s[2] + s[3]);
        detail::keep(tmp[0]);
    };
    const auto t0 = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
    {
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
        part(n / nt * t, n / nt * (t + 1));
    }
#else
    static_cast<void>(threads);
    part(0, n);
#endif
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Bytes/s read by `threads` threads streaming a buffer of `bytes` (best of `passes`).
inline double read_bandwidth(int threads = 1, std::size_t bytes = std::size_t(512) << 20, int passes = 5) {
    const std::vector<float> buf(bytes / sizeof(float), 1.0f);
    double best = 0;
    for (int p = 0; p < passes; ++p) best = std::max(best, static_cast<double>(buf.size() * sizeof(float)) / read_pass(buf, threads));
    return best;
}

/// The largest L3 of this machine in bytes, from Linux's sysfs (cpu0's cache indices: "level"
/// 3, "size" such as "32768K"); `fallback` where sysfs does not say (other systems).
inline std::size_t l3_bytes(std::size_t fallback = std::size_t(32) << 20) {
    std::size_t best = 0;
    for (int i = 0; i < 8; ++i) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        std::ifstream level(dir + "level"), size(dir + "size");
        int l = 0;
        std::string sz;
        if (!(level >> l) || !(size >> sz) || l != 3 || sz.empty()) continue;
        std::size_t v = std::strtoull(sz.c_str(), nullptr, 10);
        const char unit = sz.back();
        if (unit == 'K') v <<= 10;
        else if (unit == 'M') v <<= 20;
        else if (unit == 'G') v <<= 30;
        best = std::max(best, v);
    }
    return best > 0 ? best : fallback;
}

/// The unit a weight format's prefill runs on: "VNNI" (integer formats, where the build has
/// AVX-512 VNNI), "vdpbf16ps" (bf16:dot, where it has AVX512-BF16), else "fp32 FMA".
enum class unit { fma, vnni, bf16_dot };
template <class W>
constexpr unit prefill_unit() {
    namespace fm = kernels::formats;
    if constexpr (kernels::is_weight_type_v<W>) {
        return unit::fma;
    } else {
        constexpr bool bf16 = fm::detail::bf16_act_v<fm::up_format_t<W>>, integer = fm::up_format_t<W>::integer;
        static_cast<void>(bf16);
        static_cast<void>(integer);
#if defined(__AVX512BF16__)
        if constexpr (bf16) return unit::bf16_dot;
#endif
#if defined(__AVX512VNNI__)
        if constexpr (integer) return unit::vnni;
#endif
        return unit::fma;
    }
}
[[nodiscard]] inline const char* to_string(unit u) noexcept {
    return u == unit::vnni ? "int8 VNNI" : u == unit::bf16_dot ? "vdpbf16ps" : "fp32 FMA";
}
/// The measured peak (OP/s) of unit `u` on `threads` threads.
inline double peak(unit u, int threads = 1, long iters = 20'000'000) {
    return u == unit::vnni ? vnni_peak(threads, iters) : u == unit::bf16_dot ? bf16_dot_peak(threads, iters) : fma_peak(threads, iters);
}

}  // namespace moe::machine
