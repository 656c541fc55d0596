// Shared helpers for moe's tests.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

namespace moe_test {

/// moe::scalar and every SIMD arch this translation unit is compiled for (per-arch programs
/// add their flags): the type list of the arch-parameterised tests. The per-arch programs
/// define MOE_TEST_TOP_ARCH_ONLY: scalar and their own arch only (the lower archs have their
/// own programs; this keeps the test command's compile time in bounds).
using archs = std::tuple<moe::scalar
#if XSIMD_WITH_FMA3_AVX2 && !(defined(MOE_TEST_TOP_ARCH_ONLY) && XSIMD_WITH_AVX512BW)
                         , xsimd::fma3<xsimd::avx2>
#endif
#if XSIMD_WITH_AVX512BW
                         , xsimd::avx512bw
#endif
#if XSIMD_WITH_NEON64
                         , xsimd::neon64
#endif
                         >;

/// True when this CPU runs arch A; otherwise warns that the test is skipped.
template <class A>
bool arch_runs_here() {
    if (moe::arch_available<A>()) return true;
    WARN("skipped: this CPU lacks " << A::name());
    return false;
}

/// Runs `f` and returns the moe::error message it throws ("" if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const moe::error& e) {
        return e.what();
    }
    return "";
}

/// Random logits with a sprinkle of exact ties, for property and arch tests.
inline moe::matrix<float> random_logits(std::size_t t, std::size_t e, std::uint64_t seed, float scale = 2.0f) {
    moe::splitmix64 rng(seed);
    moe::matrix<float> m(t, e);
    for (auto& v : m.values) {
        const double u = rng.uniform();
        v = u < 0.1 ? 0.5f : static_cast<float>(rng.normal()) * scale;
    }
    return m;
}

/// Executor that runs tiles in reverse order on several std::threads: any dependence on
/// thread count or order would show up against serial_executor.
struct reversed_threads_executor {
    std::size_t threads = 3;
    template <class F>
    void operator()(std::size_t n, F&& f) const;
};

}  // namespace moe_test

#include <thread>

template <class F>
void moe_test::reversed_threads_executor::operator()(std::size_t n, F&& f) const {
    std::vector<std::thread> pool;
    for (std::size_t w = 0; w < threads; ++w)
        pool.emplace_back([&, w] {
            for (std::size_t i = n; i-- > 0;)
                if (i % threads == w) f(i);
        });
    for (auto& th : pool) th.join();
}
