// Router benchmarks. Before the cases run, this program measures the machine's single-core
// fp32 FMA peak (a register-only FMA loop) and read bandwidth (a streaming sum over 512 MiB),
// prints them, and reports every case as a fraction of the limit that binds it:
//   route (scoring + selection from logits): GB/s of logits read, and frac_bw
//   gate + route (x W^T with moe's packed kernel, then route): GFLOP/s, frac_peak and frac_bw
//   (x read once); the gate alone, packed and through Eigen's GEMM
// Baselines in the same binary: the moe::scalar arch, a naive std::partial_sort router, Eigen.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

#include "machine.hpp"

namespace {

double g_peak_flops = 0;  // fp32 FLOP/s, one core
double g_bandwidth = 0;   // bytes/s read, one core

struct shape {
    std::size_t tokens, experts, k;
    bool groups;
};

moe::router_config config_for(const shape& s) {
    if (s.groups) return moe::presets::deepseek_v3(s.k, 8, 4);
    return s.k == 2 ? moe::presets::mixtral(2) : moe::presets::qwen2_moe(s.k, true);
}

shape shape_of(const benchmark::State& st) {
    return {static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)),
            static_cast<std::size_t>(st.range(2)), st.range(3) != 0};
}

void set_counters(benchmark::State& st, const shape& s) {
    const double bytes = static_cast<double>(s.tokens * s.experts * sizeof(float));
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * s.tokens));
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * bytes));
    st.counters["frac_bw"] = benchmark::Counter(bytes / g_bandwidth, benchmark::Counter::kIsIterationInvariantRate);
}

template <class Arch>
void BM_Route(benchmark::State& st) {
    const shape s = shape_of(st);
    const auto logits = moe::synthetic_logits(s.tokens, s.experts, moe::skew::parse("zipf:1.0"), 1);
    const auto cfg = config_for(s);
    const std::vector<float> bias(s.groups ? s.experts : 0, 0.01f);
    moe::routing<float> out(s.tokens, s.experts, s.k, false);
    moe::router_workspace<float> ws;
    for (auto _ : st) {
        moe::route_into<Arch>(out, logits.view(), cfg, bias, ws);
        benchmark::DoNotOptimize(out.indices.data());
        benchmark::ClobberMemory();
    }
    set_counters(st, s);
}

/// What one writes without a library: std::exp softmax, std::partial_sort, renormalise.
void BM_RouteNaive(benchmark::State& st) {
    const shape s = shape_of(st);
    const auto logits = moe::synthetic_logits(s.tokens, s.experts, moe::skew::parse("zipf:1.0"), 1);
    std::vector<float> p(s.experts);
    std::vector<int> order(s.experts);
    std::vector<std::int32_t> idx(s.tokens * s.k);
    std::vector<float> w(s.tokens * s.k);
    for (auto _ : st) {
        for (std::size_t t = 0; t < s.tokens; ++t) {
            const float* x = logits.row(t);
            const float m = *std::max_element(x, x + s.experts);
            float sum = 0;
            for (std::size_t e = 0; e < s.experts; ++e) sum += (p[e] = std::exp(x[e] - m));
            for (std::size_t e = 0; e < s.experts; ++e) p[e] /= sum;
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + static_cast<long>(s.k), order.end(),
                              [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
            float ws = 0;
            for (std::size_t j = 0; j < s.k; ++j) ws += p[order[j]];
            for (std::size_t j = 0; j < s.k; ++j) {
                idx[t * s.k + j] = order[j];
                w[t * s.k + j] = p[order[j]] / ws;
            }
        }
        benchmark::DoNotOptimize(idx.data());
        benchmark::DoNotOptimize(w.data());
    }
    set_counters(st, s);
}


#if defined(_OPENMP)
/// Scaling over threads: route 65536 tokens on moe::openmp_executor (tiles of 64 tokens).
void BM_RouteThreads(benchmark::State& st) {
    const shape s{65536, static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)), false};
    const int threads = static_cast<int>(st.range(2));
    const auto logits = moe::synthetic_logits(s.tokens, s.experts, moe::skew::parse("zipf:1.0"), 1);
    const auto cfg = config_for(s);
    moe::routing<float> out(s.tokens, s.experts, s.k, false);
    moe::router_workspace<float> ws;
    for (auto _ : st) {
        moe::route_into(out, logits.view(), cfg, {}, ws, moe::openmp_executor{threads});
        benchmark::DoNotOptimize(out.indices.data());
        benchmark::ClobberMemory();
    }
    set_counters(st, s);
}
#endif

enum class gate_impl { packed, eigen };

/// x W^T (H = 1024) then route; `with_route` false measures the gate alone.
template <gate_impl Impl, bool WithRoute>
void BM_Gate(benchmark::State& st) {
    const shape s = shape_of(st);
    const std::size_t H = 1024;
    const auto x = moe::synthetic_logits(s.tokens, H, moe::skew::parse("uniform"), 2);
    auto w = moe::synthetic_logits(s.experts, H, moe::skew::parse("uniform"), 3);
    for (auto& v : w.values) v *= 0.03f;
    const moe::packed_gate packed = moe::pack_gate(w.view());  // once, at load
    const auto cfg = config_for(s);
    const std::vector<float> bias(s.groups ? s.experts : 0, 0.01f);
    moe::matrix<float> logits(s.tokens, s.experts);
    moe::routing<float> out(s.tokens, s.experts, s.k, false);
    moe::router_workspace<float> ws;
    for (auto _ : st) {
        if constexpr (Impl == gate_impl::packed) {
            moe::gate_into(logits.view(), x.view(), packed);
        } else {
            moe::gate_into<float>(logits.view(), x.view(), w.view());
        }
        if constexpr (WithRoute) moe::route_into(out, logits.view(), cfg, bias, ws);
        benchmark::DoNotOptimize(logits.values.data());
        benchmark::DoNotOptimize(out.indices.data());
        benchmark::ClobberMemory();
    }
    const double flops = 2.0 * static_cast<double>(s.tokens * H * s.experts);
    const double xbytes = static_cast<double>(s.tokens * H * sizeof(float));
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * s.tokens));
    st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["frac_peak"] = benchmark::Counter(flops / g_peak_flops, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["frac_bw"] = benchmark::Counter(xbytes / g_bandwidth, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "E", "k", "groups"});
    b->Args({4096, 8, 2, 0});
    b->Args({4096, 64, 8, 0});
    b->Args({4096, 256, 8, 1});
    b->Args({16, 64, 8, 0});
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Route, moe::default_arch)->Name("BM_Router_TopK/" + std::string(moe::default_arch::name()))->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Route, moe::scalar)->Name("BM_Router_TopK/scalar")->Apply(shapes);
BENCHMARK(BM_RouteNaive)->Name("BM_Router_TopK/naive_partial_sort")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Gate, gate_impl::packed, true)->Name("BM_Router_GateRoute/H=1024")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Gate, gate_impl::packed, false)->Name("BM_Gate/packed/H=1024")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Gate, gate_impl::eigen, false)->Name("BM_Gate/eigen/H=1024")->Apply(shapes);

#if defined(_OPENMP)
// Registered last: idle OpenMP workers spin for a while and would disturb single-core cases.
BENCHMARK(BM_RouteThreads)
    ->Name("BM_Router_TopK_Threads/" + std::string(moe::default_arch::name()))
    ->ArgNames({"E", "k", "threads"})
    ->ArgsProduct({{64}, {8}, {1, 2, 4, 8, 16}})
    ->UseRealTime();
#endif

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    Eigen::setNbThreads(1);  // the Eigen baseline is measured on one core, like everything else
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    g_peak_flops = moe_bench::measure_peak<moe::default_arch>();
    g_bandwidth = moe_bench::measure_bandwidth();
    std::fprintf(stderr, "machine (one core, %s): fp32 FMA peak %.1f GFLOP/s, read bandwidth %.1f GB/s\n",
                moe::default_arch::name(), g_peak_flops * 1e-9, g_bandwidth * 1e-9);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
