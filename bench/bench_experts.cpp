// Grouped SwiGLU expert benchmarks. Before the cases, this program measures the machine's fp32
// FMA peak and read bandwidth on 1 and 2 threads; every case reports `gflops`, `gbps` and
// `fraction_of_peak` against the limit that binds it: the FMA peak for prefill (T >= 512), the
// read bandwidth for the active experts' weight bytes at decode (T <= 16).
//
// Shapes: toy Mixtral (H 1024, F 3584, E 8, k 2) and DeepSeek-MoE-like (H 2048, F 1408, E 64,
// k 6); T = 1, 4, 16, 512, 4096; 1 and 2 threads; f32 and bf16 weights (f16 at decode).
// Baseline in the same binary: Eigen, per expert (gather, three GEMMs, SiLU).
// Decode cases rotate through several weight copies and routings so that the bytes come from
// DRAM, not from the (large) L3 of this machine.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <type_traits>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <benchmark/benchmark.h>

#include <moe/kernels/expert_ffn.hpp>
#include <moe/kernels/expert_set.hpp>
#include <moe/kernels/formats.hpp>
#include <moe/kernels/quant_ffn.hpp>
#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

#include "machine.hpp"

namespace {

double g_peak[3] = {0, 0, 0};  // fp32 FLOP/s on 1 and 2 threads
double g_bw[3] = {0, 0, 0};    // read bytes/s on 1 and 2 threads
double g_vnni[3] = {0, 0, 0};  // int8 OP/s (vpdpbusd) on 1 and 2 threads
double g_bf16[3] = {0, 0, 0};  // FLOP/s of vdpbf16ps on 1 and 2 threads

struct shape_t {
    const char* name;
    std::size_t H, F, E, k;
};
constexpr shape_t shapes[] = {{"mixtral", 1024, 3584, 8, 2}, {"deepseek", 2048, 1408, 64, 6}};

/// Random expert weights in HF layout, converted to W.
template <class W>
struct source_weights {
    std::vector<W> w1, w3, w2;
    source_weights(const shape_t& s, std::uint64_t seed) {
        moe::splitmix64 rng(seed);
        const std::size_t n = s.E * s.F * s.H;
        w1.resize(n);
        w3.resize(n);
        w2.resize(n);
        const float a = 1.0f / std::sqrt(static_cast<float>(s.H)), b = 1.0f / std::sqrt(static_cast<float>(s.F));
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t r = rng.next();
            w1[i] = static_cast<W>(a * (static_cast<float>(r & 0xFFFF) / 32768.0f - 1.0f));
            w3[i] = static_cast<W>(a * (static_cast<float>((r >> 16) & 0xFFFF) / 32768.0f - 1.0f));
            w2[i] = static_cast<W>(b * (static_cast<float>((r >> 32) & 0xFFFF) / 32768.0f - 1.0f));
        }
    }
};


/// The benchmarks' executor: OpenMP threads where built with OpenMP.
inline auto executor_for(int threads) {
#if defined(_OPENMP)
    return moe::openmp_executor{threads};
#else
    static_cast<void>(threads);
    return moe::serial_executor{};
#endif
}

/// The counters every expert benchmark reports: GFLOP/s, GB/s of expert weights read, and the
/// fraction of the machine's read bandwidth (decode) or of `prefill_peak` (GFLOP/s).
inline void report(benchmark::State& st, double flops, double bytes, bool decode, int threads, double prefill_peak) {
    st.counters["gflops"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["gbps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
    st.counters["fraction_of_peak"] =
        benchmark::Counter(decode ? bytes / g_bw[threads] : flops / prefill_peak, benchmark::Counter::kIsRate);
}

/// Routings of T tokens (uniform popularity), cycled through by decode cases.
std::vector<moe::dispatch_plan> plans_for(const shape_t& s, std::size_t T, std::size_t count) {
    std::vector<moe::dispatch_plan> plans;
    for (std::size_t i = 0; i < count; ++i) {
        const auto logits = moe::synthetic_logits(T, s.E, moe::skew{}, 100 + i);
        plans.push_back(moe::make_plan(moe::route(logits, moe::presets::megatron(s.k))));
    }
    return plans;
}

std::size_t active_experts(const moe::dispatch_plan& p) {
    std::size_t n = 0;
    for (auto c : p.counts) n += c > 0;
    return n;
}

template <class W>
void BM_Experts(benchmark::State& st) {
    const shape_t& s = shapes[st.range(0)];
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    const source_weights<W> src(s, 1);
    // Decode: enough copies that the weights of one pass exceed twice the L3 (here 260 MiB).
    const std::size_t layer_bytes = 3 * s.E * s.H * s.F * sizeof(W);
    const std::size_t copies = decode ? std::max<std::size_t>(1, (std::size_t(600) << 20) / layer_bytes + 1) : 1;
    std::vector<moe::kernels::packed_experts<Arch, W>> packed;
    for (std::size_t c = 0; c < copies; ++c)
        packed.push_back(moe::kernels::pack_experts<Arch>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F));
    const auto plans = plans_for(s, T, decode ? 16 : 1);
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);  // any values: activations
    std::size_t max_rows = 0;
    for (const auto& p : plans) max_rows = std::max(max_rows, p.num_rows());
    moe::matrix<float> y(max_rows, s.H);
    moe::kernels::ffn_workspace ws;
    for (const auto& p : plans) ws.reserve(moe::kernels::workspace_size(p, packed[0]).total());
    const auto ex = executor_for(threads);
    double flops = 0, bytes = 0;
    {  // warm-up: first touch of the workspace and the output
        moe::matrix_view<float> yv(y.values.data(), plans[0].num_rows(), s.H);
        moe::kernels::expert_ffn(yv, moe::matrix_view<const float>(xm.view()), plans[0], packed[0], ws.data(), ws.size(), ex);
    }
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = plans[it % plans.size()];
        const auto& pw = packed[it % copies];
        ++it;
        moe::matrix_view<float> yv(y.values.data(), plan.num_rows(), s.H);
        moe::kernels::expert_ffn(yv, moe::matrix_view<const float>(xm.view()), plan, pw, ws.data(), ws.size(), ex);
        benchmark::ClobberMemory();
        flops += 6.0 * static_cast<double>(plan.num_rows() * s.H * s.F);
        bytes += static_cast<double>(active_experts(plan) * pw.expert_bytes());
    }
    st.counters["gflops"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["gbps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
    st.counters["fraction_of_peak"] =
        benchmark::Counter(decode ? bytes / g_bw[threads] : flops / g_peak[threads], benchmark::Counter::kIsRate);
    st.SetLabel(std::string(s.name) + (decode ? " decode (bandwidth)" : " prefill (FMA peak)"));
}

/// Quantized weights (format Fmt): counters as BM_Experts, plus `weight_bytes` per forward;
/// prefill's fraction is against the int8 VNNI peak for integer formats, the vdpbf16ps peak
/// for bf16:dot, the fp32 FMA peak for weight-only formats (fp8, mxfp4).
template <class Fmt>
void BM_QuantExperts(benchmark::State& st) {
    const shape_t& s = shapes[st.range(0)];
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    moe::kernels::formats::format_params params;
    if constexpr (std::is_same<Fmt, moe::kernels::formats::int4>::value) params.group = static_cast<std::size_t>(st.range(3));
    static std::map<std::string, std::vector<std::shared_ptr<moe::kernels::packed_quant_experts<Fmt>>>> cache;
    const std::string key = std::string(s.name) + "/" + std::to_string(params.group);
    auto& packed = cache[key];
    if (packed.empty()) {
        const source_weights<float> src(s, 1);
        const auto q = moe::kernels::quantize_experts<Fmt>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F, params);
        packed.push_back(std::make_shared<moe::kernels::packed_quant_experts<Fmt>>(moe::kernels::pack_quant_experts<Fmt>(q, s.H, s.F)));
    }
    // Decode: copies so that one pass over them exceeds twice the L3.
    const std::size_t copies = decode ? std::max<std::size_t>(1, (std::size_t(600) << 20) / packed[0]->bytes() + 1) : 1;
    while (packed.size() < copies) {
        packed.push_back(std::make_shared<moe::kernels::packed_quant_experts<Fmt>>(
            packed[0]->num_experts(), s.H, s.F, packed[0]->params(), moe::kernels::pack_options{}));
        std::memcpy(packed.back()->up(0, 0), packed[0]->up(0, 0), packed[0]->num_experts() * packed[0]->expert_bytes());
    }
    const auto plans = plans_for(s, T, decode ? 16 : 1);
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    std::size_t max_rows = 0;
    for (const auto& p : plans) max_rows = std::max(max_rows, p.num_rows());
    moe::matrix<float> y(max_rows, s.H);
    moe::kernels::ffn_workspace ws;
    for (const auto& p : plans) ws.reserve(moe::kernels::workspace_size(p, *packed[0]).total());
    const auto ex = executor_for(threads);
    {
        moe::matrix_view<float> yv(y.values.data(), plans[0].num_rows(), s.H);
        moe::kernels::quant_expert_ffn<Arch>(yv, moe::matrix_view<const float>(xm.view()), plans[0], *packed[0], ws.data(), ws.size(), ex);
    }
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = plans[it % plans.size()];
        const auto& pw = *packed[it % copies];
        ++it;
        moe::matrix_view<float> yv(y.values.data(), plan.num_rows(), s.H);
        moe::kernels::quant_expert_ffn<Arch>(yv, moe::matrix_view<const float>(xm.view()), plan, pw, ws.data(), ws.size(), ex);
        benchmark::ClobberMemory();
        flops += 6.0 * static_cast<double>(plan.num_rows() * s.H * s.F);
        bytes += static_cast<double>(active_experts(plan) * pw.expert_bytes());
    }
    constexpr bool bf16 = moe::kernels::formats::detail::bf16_act_v<Fmt>;
    const double special = bf16 ? g_bf16[threads] : Fmt::integer ? g_vnni[threads] : 0.0;
    const double peak = special > 0 ? special : g_peak[threads];
    report(st, flops, bytes, decode, threads, peak);
    st.counters["weight_mb"] = static_cast<double>(active_experts(plans[0]) * packed[0]->expert_bytes()) * 1e-6;
    st.SetLabel(std::string(s.name) + " " + Fmt::name + (decode ? " decode (bandwidth)" : special <= 0 ? " prefill (FMA peak)" : bf16 ? " prefill (vdpbf16ps peak)" : " prefill (VNNI peak)"));
}

/// Per-expert formats (kernels/expert_set.hpp): even experts in q4_k, odd ones in q8_0 ("hot
/// experts in Q8"), each group run by its format's kernel on its share of the plan; against
/// BM_Experts/q4_k and /q8_0 it shows the cost of the split (the plan per group, the row copy).
void BM_ExpertSet(benchmark::State& st) {
    namespace fm = moe::kernels::formats;
    const shape_t& s = shapes[st.range(0)];
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    using set_t = moe::kernels::expert_set<Arch>;
    static std::map<std::string, std::vector<std::shared_ptr<set_t>>> cache;
    auto& sets = cache[s.name];
    if (sets.empty()) {
        const source_weights<float> src(s, 1);
        const auto p4 = moe::kernels::pack_quant_experts<fm::q4_k>(
            moe::kernels::quantize_experts<fm::q4_k>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F), s.H, s.F);
        const auto p8 = moe::kernels::pack_quant_experts<fm::q8_0>(
            moe::kernels::quantize_experts<fm::q8_0>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F), s.H, s.F);
        std::vector<std::int32_t> even, odd;
        for (std::size_t e = 0; e < s.E; ++e) (e % 2 ? odd : even).push_back(static_cast<std::int32_t>(e));
        // Decode: copies so that one pass over them exceeds twice the L3.
        const std::size_t layer = p4.bytes() / 2 + p8.bytes() / 2;
        const std::size_t copies = std::max<std::size_t>(1, (std::size_t(600) << 20) / layer + 1);
        for (std::size_t c = 0; c < copies; ++c) {
            auto set = std::make_shared<set_t>(s.E, s.H, s.F);
            set->add<fm::q4_k>(even, p4.subset(even));
            set->add<fm::q8_0>(odd, p8.subset(odd));
            sets.push_back(std::move(set));
        }
    }
    const std::size_t copies = decode ? sets.size() : 1;
    const auto plans = plans_for(s, T, decode ? 16 : 1);
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    std::size_t max_rows = 0;
    for (const auto& p : plans) max_rows = std::max(max_rows, p.num_rows());
    moe::matrix<float> y(max_rows, s.H);
    moe::kernels::ffn_workspace ws;
    const auto ex = executor_for(threads);
    {
        moe::matrix_view<float> yv(y.values.data(), plans[0].num_rows(), s.H);
        sets[0]->run(yv, moe::matrix_view<const float>(xm.view()), plans[0], ws, ex);
    }
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = plans[it % plans.size()];
        const set_t& set = *sets[it % copies];
        ++it;
        moe::matrix_view<float> yv(y.values.data(), plan.num_rows(), s.H);
        set.run(yv, moe::matrix_view<const float>(xm.view()), plan, ws, ex);
        benchmark::ClobberMemory();
        flops += 6.0 * static_cast<double>(plan.num_rows() * s.H * s.F);
        for (std::size_t e = 0; e < s.E; ++e)
            if (plan.offsets[e + 1] > plan.offsets[e]) bytes += static_cast<double>(set.expert_bytes(e));
    }
    report(st, flops, bytes, decode, threads, g_vnni[threads]);
    st.SetLabel(std::string(s.name) + " q4_k / q8_0 per expert" + (decode ? " decode (bandwidth)" : " prefill (VNNI peak)"));
}

/// Eigen, per expert: gather the expert's rows, H1 = X W1^T, H3 = X W3^T, A = silu(H1) * H3,
/// Y = A W2^T (float, Eigen's own threads).
void BM_EigenExperts(benchmark::State& st) {
    const shape_t& s = shapes[st.range(0)];
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    Eigen::setNbThreads(threads);
    // Decode: rotate weight copies as the moe cases do, so that both read from DRAM.
    const std::size_t layer_bytes = 3 * s.E * s.H * s.F * sizeof(float);
    const std::size_t copies = decode ? std::max<std::size_t>(1, (std::size_t(600) << 20) / layer_bytes + 1) : 1;
    std::vector<std::unique_ptr<source_weights<float>>> srcs;
    for (std::size_t c = 0; c < copies; ++c) srcs.push_back(std::make_unique<source_weights<float>>(s, 1));
    const auto plans = plans_for(s, T, decode ? 16 : 1);
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RM> X(xm.values.data(), static_cast<Eigen::Index>(T), static_cast<Eigen::Index>(s.H));
    RM Y;
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = plans[it % plans.size()];
        const source_weights<float>& src = *srcs[it++ % copies];
        Y.resize(static_cast<Eigen::Index>(plan.num_rows()), static_cast<Eigen::Index>(s.H));
        for (std::size_t e = 0; e < s.E; ++e) {
            const auto r0 = plan.offsets[e], n = plan.offsets[e + 1] - r0;
            if (n == 0) continue;
            RM Xe(n, static_cast<Eigen::Index>(s.H));
            for (Eigen::Index i = 0; i < n; ++i) Xe.row(i) = X.row(plan.row_token[static_cast<std::size_t>(r0 + i)]);
            const Eigen::Map<const RM> W1(src.w1.data() + e * s.F * s.H, static_cast<Eigen::Index>(s.F), static_cast<Eigen::Index>(s.H));
            const Eigen::Map<const RM> W3(src.w3.data() + e * s.F * s.H, static_cast<Eigen::Index>(s.F), static_cast<Eigen::Index>(s.H));
            const Eigen::Map<const RM> W2(src.w2.data() + e * s.H * s.F, static_cast<Eigen::Index>(s.H), static_cast<Eigen::Index>(s.F));
            RM H1 = Xe * W1.transpose();
            const RM H3 = Xe * W3.transpose();
            H1 = (H1.array() / (1.0f + (-H1.array()).exp()) * H3.array()).matrix();
            Y.middleRows(r0, n).noalias() = H1 * W2.transpose();
            bytes += static_cast<double>(3 * s.H * s.F * sizeof(float));
        }
        benchmark::ClobberMemory();
        flops += 6.0 * static_cast<double>(plan.num_rows() * s.H * s.F);
    }
    st.counters["gflops"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["gbps"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
    st.counters["fraction_of_peak"] =
        benchmark::Counter(decode ? bytes / g_bw[threads] : flops / g_peak[threads], benchmark::Counter::kIsRate);
    st.SetLabel(std::string(s.name) + " Eigen per expert");
}

void args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads"});
    for (long sh : {0, 1})
        for (long T : {1, 4, 16, 512, 4096})
            for (long th : {1, 2}) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
}
void quant_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads"});
    for (long sh : {0, 1})
        for (long T : {1, 16, 512, 4096})
            for (long th : {1, 2}) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
}
void int4_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads", "group"});
    for (long sh : {0, 1})
        for (long T : {1, 16, 512, 4096})
            for (long th : {1, 2}) b->Args({sh, T, th, 128});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
}
void decode_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads"});
    for (long sh : {0, 1})
        for (long T : {1, 4, 16})
            for (long th : {1, 2}) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.3);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Experts, float)->Name("BM_Experts/f32")->Apply(args);
BENCHMARK_TEMPLATE(BM_Experts, Eigen::bfloat16)->Name("BM_Experts/bf16")->Apply(args);
BENCHMARK_TEMPLATE(BM_Experts, Eigen::half)->Name("BM_Experts/f16")->Apply(decode_args);
namespace fmts = moe::kernels::formats;
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::bf16_dot)->Name("BM_Experts/bf16_dot")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q8_0)->Name("BM_Experts/q8_0")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q4_0)->Name("BM_Experts/q4_0")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q4_1)->Name("BM_Experts/q4_1")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q5_0)->Name("BM_Experts/q5_0")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q4_k)->Name("BM_Experts/q4_k")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q2_k)->Name("BM_Experts/q2_k")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q3_k)->Name("BM_Experts/q3_k")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q5_k)->Name("BM_Experts/q5_k")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q6_k)->Name("BM_Experts/q6_k")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::iq4_nl)->Name("BM_Experts/iq4_nl")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::iq4_xs)->Name("BM_Experts/iq4_xs")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::mixed<fmts::q4_k, fmts::q6_k>)->Name("BM_Experts/q4_k+q6_k")->Apply(quant_args);  // Q4_K_M
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::mixed<fmts::q5_k, fmts::q6_k>)->Name("BM_Experts/q5_k+q6_k")->Apply(quant_args);  // Q5_K_M
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::mixed<fmts::q3_k, fmts::q4_k>)->Name("BM_Experts/q3_k+q4_k")->Apply(quant_args);  // Q3_K_M
BENCHMARK(BM_ExpertSet)->Name("BM_Experts/q4_k|q8_0")->Apply(quant_args);  // per-expert formats
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::int8)->Name("BM_Experts/int8")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::int4)->Name("BM_Experts/int4")->Apply(int4_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::fp8)->Name("BM_Experts/fp8")->Apply(quant_args);
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::mxfp4)->Name("BM_Experts/mxfp4")->Apply(quant_args);
BENCHMARK(BM_EigenExperts)->Name("BM_Experts/eigen_f32")->Apply(args);

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    for (int t : {1, 2}) {
        g_peak[t] = moe_bench::measure_peak<moe::default_arch>(t);
        g_bw[t] = moe_bench::measure_bandwidth(t);
#if defined(__AVX512VNNI__)
        g_vnni[t] = moe_bench::measure_vnni_peak(t);
#endif
        // Machine lines go to stderr, so that --benchmark_format=json output on stdout parses.
        std::fprintf(stderr, "machine (%d thread%s, %s): fp32 FMA peak %.1f GFLOP/s, int8 VNNI peak %.1f GOP/s, read bandwidth %.1f GB/s\n",
                     t, t > 1 ? "s" : "", moe::default_arch::name(), g_peak[t] * 1e-9, g_vnni[t] * 1e-9, g_bw[t] * 1e-9);
#if defined(__AVX512BF16__)
        g_bf16[t] = moe_bench::measure_bf16_dot_peak(t);
        std::fprintf(stderr, "machine (%d thread%s): AVX-512 vdpbf16ps peak %.1f GFLOP/s\n", t, t > 1 ? "s" : "", g_bf16[t] * 1e-9);
#endif
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
