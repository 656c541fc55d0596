// Capacity benchmarks: apply_capacity per drop policy (and with reroute) in tokens/s, beside
// the dense formulation peers use (for each expert, the top-C tokens of a T x E weight matrix).
#include <algorithm>
#include <numeric>
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

moe::routing<float> routing_for(std::size_t T, std::size_t E, std::size_t k) {
    auto cfg = moe::presets::qwen2_moe(k, true);
    cfg.keep_scores = true;
    return moe::route(moe::synthetic_logits(T, E, moe::skew::parse("zipf:1.0"), 1), cfg);
}

template <moe::drop_policy Policy, bool Reroute>
void BM_Capacity(benchmark::State& st) {
    const auto base = routing_for(static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)),
                                  static_cast<std::size_t>(st.range(2)));
    moe::drop_config d;
    d.capacity.factor = 1.0;
    d.policy = Policy;
    d.reroute = Reroute;
    moe::routing<float> r = base;
    for (auto _ : st) {
        st.PauseTiming();
        r.indices = base.indices;
        r.weights = base.weights;
        st.ResumeTiming();
        auto rep = moe::apply_capacity(r, d);
        benchmark::DoNotOptimize(rep.dropped.data());
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * base.num_tokens));
}

/// Dense: a T x E matrix of routed weights; per expert, the top-C tokens (Megatron's
/// torch.topk(routing_probs, C, dim=0)).
void BM_CapacityDense(benchmark::State& st) {
    const auto r = routing_for(static_cast<std::size_t>(st.range(0)), static_cast<std::size_t>(st.range(1)),
                               static_cast<std::size_t>(st.range(2)));
    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    const std::size_t C = static_cast<std::size_t>(std::ceil(double(T * k) / double(E)));
    std::vector<float> dense(T * E), column(T);
    std::vector<std::int32_t> order(T);
    std::vector<char> keep(T * E);
    for (auto _ : st) {
        std::fill(dense.begin(), dense.end(), 0.0f);
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t s = 0; s < k; ++s) dense[t * E + static_cast<std::size_t>(r.index(t, s))] = r.weight(t, s);
        for (std::size_t e = 0; e < E; ++e) {
            for (std::size_t t = 0; t < T; ++t) column[t] = dense[t * E + e];
            std::iota(order.begin(), order.end(), 0);
            std::partial_sort(order.begin(), order.begin() + static_cast<long>(std::min(C, T)), order.end(),
                              [&](std::int32_t a, std::int32_t b) { return column[a] > column[b]; });
            for (std::size_t j = 0; j < std::min(C, T); ++j) keep[static_cast<std::size_t>(order[j]) * E + e] = 1;
        }
        benchmark::DoNotOptimize(keep.data());
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * T));
}

void shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "E", "k"});
    for (long T : {4096, 65536})
        for (auto [E, k] : {std::pair<long, long>{8, 2}, {64, 8}, {256, 8}}) b->Args({T, E, k});
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Capacity, moe::drop_policy::weight, false)->Name("BM_Capacity/weight")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Capacity, moe::drop_policy::position, false)->Name("BM_Capacity/position")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Capacity, moe::drop_policy::slot_major, false)->Name("BM_Capacity/slot_major")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Capacity, moe::drop_policy::weight, true)->Name("BM_Capacity/weight+reroute")->Apply(shapes);
BENCHMARK(BM_CapacityDense)->Name("BM_Capacity/dense_topk_per_expert")->Apply(shapes);
BENCHMARK_MAIN();
