// The machine's limits, measured in the benchmark's own run: fp32 FMA peak (a register-only FMA
// loop) and read bandwidth (a streaming sum over 512 MiB), on 1 or more OpenMP threads.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/arch.hpp>
#include <moe/detail/lane_math.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__AVX512BF16__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

namespace moe_bench {

/// Seconds for `body()` to run on `threads` threads at once (OpenMP; one thread without it,
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

/// fp32 FLOP/s of FMAs on `threads` threads (each its own independent chains).
template <class Arch>
double measure_peak(int threads = 1) {
    using O = moe::detail::lane_ops<Arch>;
    using V = typename O::V;
    const long iters = 20'000'000;
    auto body = [&] {
        constexpr int acc = 16;
        V a[acc];
        for (int i = 0; i < acc; ++i) a[i] = O::splat(1.0f + 1e-7f * static_cast<float>(i));
        const V m = O::splat(0.9999999f), c = O::splat(1e-7f);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < acc; ++i) a[i] = O::fmadd(a[i], m, c);
        float sink = 0;
        for (int i = 0; i < acc; ++i) {
            alignas(64) float tmp[O::width];
            O::store(tmp, a[i]);
            sink += tmp[0];
        }
        benchmark::DoNotOptimize(sink);
    };
    const double seconds = time_on_threads(threads, body);
    return 2.0 * O::width * 16 * static_cast<double>(iters) * threads / seconds;
}

#if defined(__AVX512BF16__)
/// FLOP/s of AVX-512 vdpbf16ps (64 FLOP each: 16 lanes x 2 products x multiply-add) on
/// `threads` threads: the peak of the bf16:dot weight format.
inline double measure_bf16_dot_peak(int threads = 1) {
    const long iters = 20'000'000;
    const double seconds = time_on_threads(threads, [&] {
        __m512 a[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(1e-3f * static_cast<float>(i));
        const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x33803380);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
        float sink = 0;
        for (int i = 0; i < 16; ++i) sink += _mm512_cvtss_f32(a[i]);
        benchmark::DoNotOptimize(sink);
    });
    return 64.0 * 16 * static_cast<double>(iters) * threads / seconds;
}
#endif

#if defined(__AVX512VNNI__)
/// Integer OP/s of AVX-512 vpdpbusd (128 OP each: 64 u8 x s8 products, each a multiply and an
/// add) on `threads` threads: the peak of the integer weight formats.
inline double measure_vnni_peak(int threads = 1) {
    const long iters = 20'000'000;
    const double seconds = time_on_threads(threads, [&] {
        __m512i a[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_epi32(i);
        const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
        for (long it = 0; it < iters; ++it)
            for (int i = 0; i < 16; ++i) a[i] = _mm512_dpbusd_epi32(a[i], x, y);
        int sink = 0;
        for (int i = 0; i < 16; ++i) sink += _mm_cvtsi128_si32(_mm512_castsi512_si128(a[i]));
        benchmark::DoNotOptimize(sink);
    });
    return 128.0 * 16 * static_cast<double>(iters) * threads / seconds;
}
#endif

/// Bytes/s read by `threads` threads streaming disjoint parts of a 512 MiB buffer (best of 5).
/// Each thread reads 4 separate streams at once (4 regions of its part), 4 vectors each, with
/// software prefetch 1 KiB ahead: the most the kernels' access patterns could draw.
inline double measure_bandwidth(int threads = 1) {
    using O = moe::detail::lane_ops<moe::default_arch>;
    using V = typename O::V;
    const std::size_t n = (std::size_t(512) << 20) / sizeof(float);
    std::vector<float> buf(n, 1.0f);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        auto part = [&](std::size_t b, std::size_t e) {
            V s[4] = {O::splat(0), O::splat(0), O::splat(0), O::splat(0)};
            const std::size_t len = (e - b) / 4 / (4 * O::width) * (4 * O::width);
            for (std::size_t i = 0; i < len; i += 4 * O::width)
                for (std::size_t st = 0; st < 4; ++st) {
                    const float* p = buf.data() + b + st * len + i;
                    __builtin_prefetch(p + 256, 0, 0);
                    for (std::size_t j = 0; j < 4; ++j) s[j] = s[j] + O::load(p + j * O::width);
                }
            alignas(64) float tmp[O::width];
            O::store(tmp, s[0] + s[1] + s[2] + s[3]);
            benchmark::DoNotOptimize(tmp[0]);
        };
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
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, static_cast<double>(n * sizeof(float)) / sec);
    }
    return best;
}

}  // namespace moe_bench
