// Dispatch benchmarks: plan construction beside a naive stable sort, and gather / combine in
// GB/s beside memcpy of the same bytes (the bandwidth they can at best reach).
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

moe::routing<float> routing_for(std::size_t T, std::size_t E, std::size_t k) {
    const auto logits = moe::synthetic_logits(T, E, moe::skew::parse("zipf:1.0"), 1);
    return moe::route(logits, moe::presets::qwen2_moe(k, true));
}

void BM_Plan(benchmark::State& st) {
    const auto r = routing_for(static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)),
                               static_cast<std::size_t>(st.range(2)));
    moe::dispatch_plan p;
    for (auto _ : st) {
        moe::make_plan_into(p, r);
        benchmark::DoNotOptimize(p.slot_row.data());
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * r.num_tokens));
}

/// The obvious way: stable-sort (expert, token) pairs.
void BM_PlanNaive(benchmark::State& st) {
    const auto r = routing_for(static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)),
                               static_cast<std::size_t>(st.range(2)));
    std::vector<std::int32_t> order(r.indices.size());
    for (auto _ : st) {
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return r.indices[a] < r.indices[b]; });
        benchmark::DoNotOptimize(order.data());
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * r.num_tokens));
}

struct movement {
    moe::routing<float> r;
    moe::dispatch_plan p;
    moe::matrix<float> x, rows, y;
    movement(std::size_t T, std::size_t E, std::size_t k, std::size_t H)
        : r(routing_for(T, E, k)), p(moe::make_plan(r)), x(moe::synthetic_logits(T, H, moe::skew::parse("uniform"), 2)),
          rows(p.num_rows(), H, 0.0f), y(T, H, 0.0f) {}
};

void BM_Gather(benchmark::State& st) {
    movement m(4096, static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)), 4096);
    for (auto _ : st) {
        moe::gather(m.rows.view(), m.x.view(), m.p);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * m.rows.values.size() * sizeof(float) * 2));
}

void BM_Combine(benchmark::State& st) {
    movement m(4096, static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)), 4096);
    for (auto _ : st) {
        moe::combine(m.y.view(), m.rows.view(), m.p, m.r);
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(
        static_cast<std::int64_t>(st.iterations() * (m.rows.values.size() + m.y.values.size()) * sizeof(float)));
}

/// memcpy of the rows gather writes: what gather could at best do (bytes read + written).
void BM_Memcpy(benchmark::State& st) {
    movement m(4096, static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)), 4096);
    std::vector<float> src(m.rows.values.size(), 1.0f);
    for (auto _ : st) {
        std::memcpy(m.rows.values.data(), src.data(), src.size() * sizeof(float));
        benchmark::ClobberMemory();
    }
    st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * src.size() * sizeof(float) * 2));
}

void plan_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "E", "k"});
    for (long T : {4096, 65536})
        for (auto [E, k] : {std::pair<long, long>{8, 2}, {64, 8}, {256, 8}}) b->Args({T, E, k});
}

}  // namespace

BENCHMARK(BM_Plan)->Name("BM_Dispatch_Plan")->Apply(plan_shapes);
BENCHMARK(BM_PlanNaive)->Name("BM_Dispatch_Plan/naive_stable_sort")->Apply(plan_shapes);
BENCHMARK(BM_Memcpy)->Name("BM_Dispatch_Memcpy/H=4096")->ArgNames({"E", "k"})->Args({8, 2})->Args({64, 8});
BENCHMARK(BM_Gather)->Name("BM_Dispatch_Gather/H=4096")->ArgNames({"E", "k"})->Args({8, 2})->Args({64, 8});
BENCHMARK(BM_Combine)->Name("BM_Dispatch_Combine/H=4096")->ArgNames({"E", "k"})->Args({8, 2})->Args({64, 8});
BENCHMARK_MAIN();
