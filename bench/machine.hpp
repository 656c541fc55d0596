// The machine's limits, measured in the benchmark's own run (moe/analysis/machine.hpp: fp32 FMA,
// VNNI and vdpbf16ps peaks, read bandwidth over 512 MiB, on 1 or more OpenMP threads), and the
// benchmarks' smoke mode and decode rotation sizes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <string>

#include <benchmark/benchmark.h>

#include <moe/analysis/machine.hpp>

namespace moe_bench {

/// Smoke mode (environment MOE_BENCH_SMOKE=1, set by the test command's `bench.smoke.*` tests):
/// every registered case runs about once, with one weight copy, so that a case that throws or
/// crashes fails the tests. Its figures mean nothing.
inline bool smoke() {
    static const bool on = [] {
        const char* v = std::getenv("MOE_BENCH_SMOKE");
        return v != nullptr && *v != '\0' && std::string(v) != "0";
    }();
    return on;
}

/// A case's minimum time: `seconds`, or 1 ms in smoke mode (one iteration of any real case).
inline double min_time(double seconds) { return smoke() ? 1e-3 : seconds; }

/// Distinct weight bytes a decode case reads before it reads any byte again: at least 1 GiB and
/// twice the L3, so that decode draws its weights from DRAM (this VM class reports L3s of 32 to
/// 480 MiB). One byte in smoke mode (a single copy).
inline std::size_t decode_rotation_bytes() {
    static const std::size_t b = smoke() ? 1 : std::max(std::size_t(1) << 30, 2 * moe::machine::l3_bytes());
    return b;
}

/// Copies of a layer of `layer_bytes` whose rotation reads `decode_rotation_bytes()`.
inline std::size_t decode_copies(std::size_t layer_bytes) {
    return std::max<std::size_t>(1, (decode_rotation_bytes() + layer_bytes - 1) / std::max<std::size_t>(1, layer_bytes));
}

// The measurements themselves are the library's (moe/analysis/machine.hpp); these names keep
// the benchmarks' calls short.
template <class Arch>
double measure_peak(int threads = 1) {
    return moe::machine::fma_peak<Arch>(threads);
}
inline double measure_vnni_peak(int threads = 1) { return moe::machine::vnni_peak(threads); }
inline double measure_bf16_dot_peak(int threads = 1) { return moe::machine::bf16_dot_peak(threads); }
/// Bytes/s read by `threads` threads streaming disjoint parts of a 512 MiB buffer (best of 5).
inline double measure_bandwidth(int threads = 1) { return moe::machine::read_bandwidth(threads); }

}  // namespace moe_bench
