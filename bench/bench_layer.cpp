// The whole sparse MoE layer (gate, route, plan, gather, experts, combine) for the toy Mixtral
// shape (H 1024, F 3584, E 8, top-2): T = 1, 16, 512, 4096; 1 and 2 threads; f32 and bf16
// weights. Each case reports `expert_fraction` (time in the expert kernels / layer time,
// measured by running the kernels alone on the same plan) and the layer's GFLOP/s. Baseline in
// the same binary: the same layer written naively with Eigen (gate GEMM, softmax top-2, then per
// expert: gather, three products, SiLU, scatter-add).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include <Eigen/Dense>
#include <benchmark/benchmark.h>

#include <moe/block.hpp>
#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

#include "machine.hpp"

namespace {

constexpr std::size_t H = 1024, F = 3584, E = 8;

struct weights {
    std::vector<float> router, w1, w3, w2;
    explicit weights(std::uint64_t seed) {
        moe::splitmix64 rng(seed);
        router.resize(E * H);
        for (auto& v : router) v = static_cast<float>(rng.normal() / 32.0);
        w1.resize(E * F * H);
        w3.resize(E * F * H);
        w2.resize(E * H * F);
        for (auto* v : {&w1, &w3, &w2})
            for (auto& x : *v) x = static_cast<float>(rng.uniform() - 0.5) * 0.06f;
    }
};

const weights& shared_weights() {
    static const weights w(1);
    return w;
}

/// Layer copies for decode cases, so that weights come from DRAM (a rotation reads at least
/// 1 GiB and twice this machine's L3; one copy in smoke mode).
std::size_t copies_for(std::size_t T, std::size_t bytes_per_layer) {
    return T <= 16 ? moe_bench::decode_copies(bytes_per_layer) : 1;
}

template <class W>
void BM_Layer(benchmark::State& st) {
    const std::size_t T = static_cast<std::size_t>(st.range(0));
    const int threads = static_cast<int>(st.range(1));
    const weights& w = shared_weights();
    const std::vector<W> w1(w.w1.begin(), w.w1.end()), w3(w.w3.begin(), w.w3.end()), w2(w.w2.begin(), w.w2.end());
    const std::size_t copies = copies_for(T, 3 * E * H * F * sizeof(W));
    std::vector<std::unique_ptr<moe::block<moe::default_arch, W>>> blocks;
    for (std::size_t c = 0; c < copies; ++c)
        blocks.push_back(std::make_unique<moe::block<moe::default_arch, W>>(moe::view(w.router.data(), E, H), w1.data(),
                                                                                        w3.data(), w2.data(), F));
    std::vector<moe::matrix<float>> xs;
    for (std::size_t i = 0; i < 8; ++i) xs.push_back(moe::synthetic_logits(T, H, moe::skew{}, 10 + i));
    moe::matrix<float> y(T, H);
#if defined(_OPENMP)
    const moe::openmp_executor ex{threads};
#else
    const moe::serial_executor ex{};
#endif
    for (auto& b : blocks) b->forward(y.view(), xs[0], ex);  // warm-up
    // The expert kernels alone, on each iteration's plan right after the layer ran it (same
    // packed weights): interleaving keeps this VM's noise out of the ratio.
    moe::kernels::ffn_workspace ws;
    moe::matrix<float> rows;
    double flops = 0, layer_s = 0, expert_s = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        auto& b = *blocks[it % copies];
        const auto& x = xs[it % xs.size()];
        ++it;
        const auto t0 = std::chrono::steady_clock::now();
        b.forward(y.view(), x, ex);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        st.SetIterationTime(s);
        layer_s += s;
        flops += b.last_flops();
        const auto& plan = b.last_plan();
        ws.reserve(moe::kernels::workspace_size(plan, b.packed_experts()).total());
        if (rows.values.size() < plan.num_rows() * H) rows = moe::matrix<float>(plan.num_rows(), H);
        const moe::matrix_view<float> rv(rows.values.data(), plan.num_rows(), H);
        const auto t1 = std::chrono::steady_clock::now();
        moe::kernels::expert_ffn(rv, moe::matrix_view<const float>(x.view()), plan, b.packed_experts(), ws.data(), ws.size(), ex);
        expert_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
        benchmark::ClobberMemory();
    }
    const double per_layer = layer_s / static_cast<double>(it);
    st.counters["gflops"] = benchmark::Counter(flops * 1e-9 / layer_s);
    st.counters["expert_fraction"] = benchmark::Counter(expert_s / layer_s);
    st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(T) / per_layer);
}

/// The naive Eigen layer: gate GEMM, softmax top-2 renormalised, per expert gather, three
/// products, SiLU, weighted scatter-add (float, Eigen's threads).
void BM_EigenLayer(benchmark::State& st) {
    const std::size_t T = static_cast<std::size_t>(st.range(0));
    const int threads = static_cast<int>(st.range(1));
    Eigen::setNbThreads(threads);
    const weights& w0 = shared_weights();
    const std::size_t copies = copies_for(T, 3 * E * H * F * sizeof(float));
    std::vector<std::unique_ptr<weights>> extra;
    for (std::size_t c = 1; c < copies; ++c) extra.push_back(std::make_unique<weights>(1));
    using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    std::vector<moe::matrix<float>> xs;
    for (std::size_t i = 0; i < 8; ++i) xs.push_back(moe::synthetic_logits(T, H, moe::skew{}, 10 + i));
    RM Y(static_cast<Eigen::Index>(T), static_cast<Eigen::Index>(H));
    std::size_t it = 0;
    double flops = 0;
    for (auto _ : st) {
        const weights& w = it % copies == 0 ? w0 : *extra[it % copies - 1];
        const auto& xm = xs[it % xs.size()];
        ++it;
        const Eigen::Map<const RM> X(xm.values.data(), static_cast<Eigen::Index>(T), static_cast<Eigen::Index>(H));
        const Eigen::Map<const RM> Wr(w.router.data(), static_cast<Eigen::Index>(E), static_cast<Eigen::Index>(H));
        const RM logits = X * Wr.transpose();
        std::vector<std::vector<std::pair<Eigen::Index, float>>> rows(E);
        for (Eigen::Index t = 0; t < logits.rows(); ++t) {
            Eigen::RowVectorXf p = (logits.row(t).array() - logits.row(t).maxCoeff()).exp();
            p /= p.sum();
            Eigen::Index a = 0, b = 1;
            if (p(b) > p(a)) std::swap(a, b);
            for (Eigen::Index e = 2; e < p.size(); ++e) {
                if (p(e) > p(a)) b = a, a = e;
                else if (p(e) > p(b)) b = e;
            }
            const float s = p(a) + p(b);
            rows[static_cast<std::size_t>(a)].push_back({t, p(a) / s});
            rows[static_cast<std::size_t>(b)].push_back({t, p(b) / s});
        }
        Y.setZero();
        for (std::size_t e = 0; e < E; ++e) {
            const auto n = static_cast<Eigen::Index>(rows[e].size());
            if (n == 0) continue;
            RM Xe(n, static_cast<Eigen::Index>(H));
            for (Eigen::Index i = 0; i < n; ++i) Xe.row(i) = X.row(rows[e][static_cast<std::size_t>(i)].first);
            const Eigen::Map<const RM> W1(w.w1.data() + e * F * H, static_cast<Eigen::Index>(F), static_cast<Eigen::Index>(H));
            const Eigen::Map<const RM> W3(w.w3.data() + e * F * H, static_cast<Eigen::Index>(F), static_cast<Eigen::Index>(H));
            const Eigen::Map<const RM> W2(w.w2.data() + e * H * F, static_cast<Eigen::Index>(H), static_cast<Eigen::Index>(F));
            RM A = Xe * W1.transpose();
            const RM B = Xe * W3.transpose();
            A = (A.array() / (1.0f + (-A.array()).exp()) * B.array()).matrix();
            const RM Ye = A * W2.transpose();
            for (Eigen::Index i = 0; i < n; ++i)
                Y.row(rows[e][static_cast<std::size_t>(i)].first) += rows[e][static_cast<std::size_t>(i)].second * Ye.row(i);
            flops += 6.0 * static_cast<double>(n) * H * F;
        }
        benchmark::ClobberMemory();
    }
    st.counters["gflops"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(T * it), benchmark::Counter::kIsRate);
}

void shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"T", "threads"});
    for (long T : {1, 16, 512, 4096})
        for (long th : {1, 2}) b->Args({T, th});
    b->Unit(benchmark::kMillisecond)->MinTime(moe_bench::min_time(1.0));
}
void args(benchmark::internal::Benchmark* b) {
    shapes(b);
    b->UseRealTime();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Layer, float)->Name("BM_Layer/moe_f32")->Apply(shapes)->UseManualTime();
BENCHMARK_TEMPLATE(BM_Layer, Eigen::bfloat16)->Name("BM_Layer/moe_bf16")->Apply(shapes)->UseManualTime();
BENCHMARK(BM_EigenLayer)->Name("BM_Layer/eigen_f32")->Apply(args);

BENCHMARK_MAIN();
