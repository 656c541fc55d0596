// Loss benchmarks: each loss with its gradient for (T, E) = (4096, 8), (4096, 64),
// (65536, 256), in tokens/s, on the SIMD arch this binary is built for and on moe::scalar
// (the scalar baseline).
#include <vector>

#include <benchmark/benchmark.h>

#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

namespace {

struct inputs {
    moe::matrix<float> logits, noisy, grad;
    moe::routing<float> r, rn;
    inputs(std::size_t T, std::size_t E)
        : logits(moe::synthetic_logits(T, E, moe::skew::parse("zipf:1.0"), 1)), noisy(logits), grad(T, E),
          r(moe::route(logits, moe::presets::megatron(E >= 64 ? 8 : 2))) {
        moe::add_normal_noise(noisy.view(), 1.0 / static_cast<double>(E), 2);
        rn = moe::route(noisy, moe::presets::megatron(E >= 64 ? 8 : 2));
    }
};

enum class which { lbl_softmax, lbl_sigmoid, sequence, global, z, importance };

template <class Arch, which W>
void BM_Loss(benchmark::State& st) {
    const std::size_t T = static_cast<std::size_t>(st.range(0)), E = static_cast<std::size_t>(st.range(1));
    inputs in(T, E);
    moe::aux_loss_config cfg;
    if (W == which::lbl_sigmoid) cfg.score = moe::score_function::sigmoid;
    for (auto _ : st) {
        double v = 0;
        switch (W) {
            case which::lbl_softmax:
            case which::lbl_sigmoid: v = moe::load_balancing_loss<Arch>(in.logits, in.r, cfg, {}, in.grad.view()); break;
            case which::sequence:
                v = moe::sequence_load_balancing_loss<Arch>(in.logits, in.r, T / 4, cfg, {}, in.grad.view());
                break;
            case which::global: {
                moe::global_load_balancer acc(cfg);
                acc.add<Arch>(in.logits, in.r);
                acc.gradient<Arch>(in.logits, in.grad.view());
                v = acc.loss();
                break;
            }
            case which::z: v = moe::z_loss<Arch>(in.logits, 1e-3, {}, in.grad.view()); break;
            case which::importance: v = moe::importance_load_loss<Arch>(in.logits, in.noisy, in.rn, 1.0, in.grad.view()); break;
        }
        benchmark::DoNotOptimize(v);
        benchmark::DoNotOptimize(in.grad.values.data());
    }
    st.SetItemsProcessed(static_cast<std::int64_t>(st.iterations() * T));
    st.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(st.iterations() * T), benchmark::Counter::kIsRate);
}

void shapes(benchmark::internal::Benchmark* b) {
    b->Args({4096, 8})->Args({4096, 64})->Args({65536, 256})->Unit(benchmark::kMicrosecond);
}

using simd = moe::default_arch;
using scalar = moe::scalar;

}  // namespace

BENCHMARK_TEMPLATE(BM_Loss, simd, which::lbl_softmax)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::lbl_softmax)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, simd, which::lbl_sigmoid)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::lbl_sigmoid)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, simd, which::sequence)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::sequence)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, simd, which::global)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::global)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, simd, which::z)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::z)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, simd, which::importance)->Apply(shapes);
BENCHMARK_TEMPLATE(BM_Loss, scalar, which::importance)->Apply(shapes);

BENCHMARK_MAIN();
