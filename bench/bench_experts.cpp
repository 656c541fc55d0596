// Grouped SwiGLU expert benchmarks. Before the cases, this program measures the machine's fp32
// FMA peak and read bandwidth on 1 and 2 threads; every case reports `gflops`, `gbps` and
// `fraction_of_peak` against the limit that binds it: the FMA peak for prefill (T >= 512), the
// read bandwidth for the active experts' weight bytes at decode (T <= 16).
//
// Shapes: toy Mixtral (H 1024, F 3584, E 8, k 2) and DeepSeek-MoE-like (H 2048, F 1408, E 64,
// k 6); T = 1, 4, 16, 512, 4096; 1 and 2 threads; f32 and bf16 weights (f16 at decode).
// Baseline in the same binary: Eigen, per expert (gather, three GEMMs, SiLU).
// Decode cases rotate through weight copies and routings that read every expert of every copy
// once per rotation, at least 1 GiB and twice the L3 (read from sysfs), so that the bytes come
// from DRAM; a format's copies are released when its cases end. Shapes whose rows are not a
// multiple of a k-quant's 256-weight block (DeepSeek's F = 1408) store those projections in
// the format llama.cpp's quantizer falls back to (q4_k's down in q5_0), as its files do.
// MOE_BENCH_SMOKE=1 runs every case once, with 8 experts and without T = 4096 (the test
// command's smoke test).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <typeinfo>
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

/// The case's shape (argument 0); in smoke mode with at most 8 experts (H and F, which decide
/// what a format accepts, unchanged), so that every case runs in moments.
shape_t shape_of(const benchmark::State& st) {
    shape_t s = shapes[st.range(0)];
    if (moe_bench::smoke()) s.E = std::min<std::size_t>(s.E, 8);
    return s;
}

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

/// Routings of T tokens (skewed popularity), for prefill.
std::vector<moe::dispatch_plan> plans_for(const shape_t& s, std::size_t T, std::size_t count) {
    std::vector<moe::dispatch_plan> plans;
    for (std::size_t i = 0; i < count; ++i) {
        const auto logits = moe::synthetic_logits(T, s.E, moe::skew{}, 100 + i);
        plans.push_back(moe::make_plan(moe::route(logits, moe::presets::megatron(s.k))));
    }
    return plans;
}

/// Decode routings that read every expert once per pass over them: token t of routing j picks
/// experts (j T k + t k + m) mod E, m < k; ceil(E / (T k)) routings cover the layer.
std::vector<moe::dispatch_plan> decode_plans(const shape_t& s, std::size_t T) {
    const std::size_t per = T * s.k, count = (s.E + per - 1) / per;
    std::vector<moe::dispatch_plan> plans;
    for (std::size_t j = 0; j < count; ++j) {
        moe::matrix<float> logits(T, s.E);
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t m = 0; m < s.k; ++m) logits(t, (j * per + t * s.k + m) % s.E) = 8.0f - static_cast<float>(m);
        plans.push_back(moe::make_plan(moe::route(logits, moe::presets::megatron(s.k))));
    }
    return plans;
}

/// What a case cycles through: iteration i runs routing i mod P on weight copy (i / P) mod
/// copies. Decode: every expert of every copy once per rotation, copies from the machine's L3
/// (moe_bench::decode_copies); prefill: one routing, one copy.
struct rotation {
    std::vector<moe::dispatch_plan> plans;
    std::size_t copies = 1;
    rotation(const shape_t& s, std::size_t T, std::size_t layer_bytes)
        : plans(T <= 16 ? decode_plans(s, T) : plans_for(s, T, 1)), copies(T <= 16 ? moe_bench::decode_copies(layer_bytes) : 1) {}
    const moe::dispatch_plan& plan(std::size_t it) const { return plans[it % plans.size()]; }
    std::size_t copy(std::size_t it) const { return it / plans.size() % copies; }
    std::size_t max_rows() const {
        std::size_t m = 0;
        for (const auto& p : plans) m = std::max(m, p.num_rows());
        return m;
    }
};

std::size_t active_experts(const moe::dispatch_plan& p) {
    std::size_t n = 0;
    for (auto c : p.counts) n += c > 0;
    return n;
}

/// The weights of one format and shape, kept across its cases and released when a case of
/// another format or shape asks (one format's copies resident at a time).
std::string g_held_key;
std::shared_ptr<void> g_held;
template <class T>
T& held(const std::string& key) {
    if (g_held_key != key || !g_held) {
        g_held.reset();
        g_held = std::make_shared<T>();
        g_held_key = key;
    }
    return *static_cast<T*>(g_held.get());
}

template <class W>
void BM_Experts(benchmark::State& st) {
    const shape_t s = shape_of(st);
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    using packed_t = moe::kernels::packed_experts<Arch, W>;
    const rotation rot(s, T, 3 * s.E * s.H * s.F * sizeof(W));
    auto& packed = held<std::vector<packed_t>>(std::string("float/") + typeid(W).name() + "/" + s.name);
    if (packed.size() < rot.copies) {
        const source_weights<W> src(s, 1);
        while (packed.size() < rot.copies)
            packed.push_back(moe::kernels::pack_experts<Arch>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F));
    }
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);  // any values: activations
    moe::matrix<float> y(rot.max_rows(), s.H);
    moe::kernels::ffn_workspace ws;
    for (const auto& p : rot.plans) ws.reserve(moe::kernels::workspace_size(p, packed[0]).total());
    const auto ex = executor_for(threads);
    double flops = 0, bytes = 0;
    {  // warm-up: first touch of the workspace and the output
        moe::matrix_view<float> yv(y.values.data(), rot.plans[0].num_rows(), s.H);
        moe::kernels::expert_ffn(yv, moe::matrix_view<const float>(xm.view()), rot.plans[0], packed[0], ws.data(), ws.size(), ex);
    }
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = rot.plan(it);
        const auto& pw = packed[rot.copy(it)];
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

/// Quantized weights (format Fmt): counters as BM_Experts, plus `weight_mb` per forward;
/// prefill's fraction is against the int8 VNNI peak for integer formats, the vdpbf16ps peak
/// for bf16:dot, the fp32 FMA peak for weight-only formats (fp8, mxfp4). `note` names a
/// fallback (see BM_QuantExperts).
template <class Fmt>
void quant_case(benchmark::State& st, const std::string& note) {
    const shape_t s = shape_of(st);
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    using packed_t = moe::kernels::packed_quant_experts<Fmt>;
    moe::kernels::formats::format_params params;
    if constexpr (std::is_same<Fmt, moe::kernels::formats::int4>::value) params.group = static_cast<std::size_t>(st.range(3));
    auto& packed = held<std::vector<std::unique_ptr<packed_t>>>(std::string(Fmt::name) + "/" + s.name + "/" + std::to_string(params.group));
    if (packed.empty()) {
        const source_weights<float> src(s, 1);
        const auto q = moe::kernels::quantize_experts<Fmt>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F, params);
        packed.push_back(std::make_unique<packed_t>(moe::kernels::pack_quant_experts<Fmt>(q, s.H, s.F)));
    }
    const rotation rot(s, T, packed[0]->bytes());
    while (packed.size() < rot.copies) {
        packed.push_back(std::make_unique<packed_t>(packed[0]->num_experts(), s.H, s.F, packed[0]->params(), moe::kernels::pack_options{}));
        std::memcpy(packed.back()->up(0, 0), packed[0]->up(0, 0), packed[0]->num_experts() * packed[0]->expert_bytes());
    }
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    moe::matrix<float> y(rot.max_rows(), s.H);
    moe::kernels::ffn_workspace ws;
    for (const auto& p : rot.plans) ws.reserve(moe::kernels::workspace_size(p, *packed[0]).total());
    const auto ex = executor_for(threads);
    {
        moe::matrix_view<float> yv(y.values.data(), rot.plans[0].num_rows(), s.H);
        moe::kernels::quant_expert_ffn<Arch>(yv, moe::matrix_view<const float>(xm.view()), rot.plans[0], *packed[0], ws.data(), ws.size(), ex);
    }
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = rot.plan(it);
        const auto& pw = *packed[rot.copy(it)];
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
    st.counters["weight_mb"] = static_cast<double>(active_experts(rot.plans[0]) * packed[0]->expert_bytes()) * 1e-6;
    st.SetLabel(std::string(s.name) + " " + Fmt::name + note +
                (decode ? " decode (bandwidth)" : special <= 0 ? " prefill (FMA peak)" : bf16 ? " prefill (vdpbf16ps peak)" : " prefill (VNNI peak)"));
}

/// Format Fmt on the case's shape. Where the shape's F is not a multiple of the down format's
/// super-block, the down projections take the format llama.cpp's quantizer falls back to
/// (`formats::gguf_fallback_t`: DeepSeek's F = 1408 down projections of a q4_k file are q5_0),
/// as the GGUF files of that shape store them; skipped, with the reason, where moe lacks that
/// format or H does not fit the gate / up format.
template <class Fmt>
void BM_QuantExperts(benchmark::State& st) {
    namespace fm = moe::kernels::formats;
    using Up = fm::up_format_t<Fmt>;
    using Down = fm::down_format_t<Fmt>;
    using DownF = fm::gguf_fallback_t<Down>;
    const shape_t s = shape_of(st);
    if (s.H % fm::block_of_v<Up> != 0) {
        st.SkipWithError((std::string(Fmt::name) + ": H=" + std::to_string(s.H) + " is not a multiple of its block").c_str());
        return;
    }
    if (s.F % fm::block_of_v<Down> == 0) return quant_case<Fmt>(st, "");
    if constexpr (std::is_void<DownF>::value) {
        st.SkipWithError((std::string(Fmt::name) + ": F=" + std::to_string(s.F) + " is not a multiple of " + Down::name +
                          "'s block, and llama.cpp's fallback for it is not a moe format").c_str());
    } else {
        using Run = std::conditional_t<std::is_same<Up, DownF>::value, Up, fm::mixed<Up, DownF>>;
        if (s.F % fm::block_of_v<DownF> != 0) {
            st.SkipWithError((std::string(Fmt::name) + ": F=" + std::to_string(s.F) + " fits neither it nor its fallback").c_str());
            return;
        }
        quant_case<Run>(st, std::string(" (down in ") + DownF::name + ": F=" + std::to_string(s.F) + ", as llama.cpp stores it)");
    }
}

/// Per-expert formats (kernels/expert_set.hpp): even experts in q4_k, odd ones in q8_0 ("hot
/// experts in Q8"), each group run by its format's kernel on its share of the plan; against
/// BM_Experts/q4_k and /q8_0 it shows the cost of the split (the plan per group, the row copy).
/// Lo: q4_k, or on shapes whose F does not fit it q4_k with its down projections in q5_0.
template <class Lo>
void expert_set_case(benchmark::State& st) {
    namespace fm = moe::kernels::formats;
    const shape_t s = shape_of(st);
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    using Arch = moe::default_arch;
    using set_t = moe::kernels::expert_set<Arch>;
    struct sets_t {
        std::unique_ptr<moe::kernels::packed_quant_experts<Lo>> p4;
        std::unique_ptr<moe::kernels::packed_quant_experts<fm::q8_0>> p8;
        std::vector<std::unique_ptr<set_t>> sets;
    };
    auto& h = held<sets_t>(std::string(Lo::name) + "|q8_0/" + s.name);
    std::vector<std::int32_t> even, odd;
    for (std::size_t e = 0; e < s.E; ++e) (e % 2 ? odd : even).push_back(static_cast<std::int32_t>(e));
    if (!h.p4) {
        const source_weights<float> src(s, 1);
        h.p4 = std::make_unique<moe::kernels::packed_quant_experts<Lo>>(moe::kernels::pack_quant_experts<Lo>(
            moe::kernels::quantize_experts<Lo>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F), s.H, s.F));
        h.p8 = std::make_unique<moe::kernels::packed_quant_experts<fm::q8_0>>(moe::kernels::pack_quant_experts<fm::q8_0>(
            moe::kernels::quantize_experts<fm::q8_0>(src.w1.data(), src.w3.data(), src.w2.data(), s.E, s.H, s.F), s.H, s.F));
    }
    const rotation rot(s, T, h.p4->bytes() / 2 + h.p8->bytes() / 2);
    while (h.sets.size() < rot.copies) {
        h.sets.push_back(std::make_unique<set_t>(s.E, s.H, s.F));
        h.sets.back()->template add<Lo>(even, h.p4->subset(even));
        h.sets.back()->template add<fm::q8_0>(odd, h.p8->subset(odd));
    }
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    moe::matrix<float> y(rot.max_rows(), s.H);
    moe::kernels::ffn_workspace ws;
    const auto ex = executor_for(threads);
    {
        moe::matrix_view<float> yv(y.values.data(), rot.plans[0].num_rows(), s.H);
        h.sets[0]->run(yv, moe::matrix_view<const float>(xm.view()), rot.plans[0], ws, ex);
    }
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = rot.plan(it);
        const set_t& set = *h.sets[rot.copy(it)];
        ++it;
        moe::matrix_view<float> yv(y.values.data(), plan.num_rows(), s.H);
        set.run(yv, moe::matrix_view<const float>(xm.view()), plan, ws, ex);
        benchmark::ClobberMemory();
        flops += 6.0 * static_cast<double>(plan.num_rows() * s.H * s.F);
        for (std::size_t e = 0; e < s.E; ++e)
            if (plan.offsets[e + 1] > plan.offsets[e]) bytes += static_cast<double>(set.expert_bytes(e));
    }
    report(st, flops, bytes, decode, threads, g_vnni[threads]);
    st.SetLabel(std::string(s.name) + " " + Lo::name + " / q8_0 per expert" + (decode ? " decode (bandwidth)" : " prefill (VNNI peak)"));
}
void BM_ExpertSet(benchmark::State& st) {
    namespace fm = moe::kernels::formats;
    if (shapes[st.range(0)].F % fm::q4_k::block == 0) expert_set_case<fm::q4_k>(st);
    else expert_set_case<fm::mixed<fm::q4_k, fm::gguf_fallback_t<fm::q4_k>>>(st);
}

/// Eigen, per expert: gather the expert's rows, H1 = X W1^T, H3 = X W3^T, A = silu(H1) * H3,
/// Y = A W2^T (float, Eigen's own threads).
void BM_EigenExperts(benchmark::State& st) {
    const shape_t s = shape_of(st);
    const std::size_t T = static_cast<std::size_t>(st.range(1));
    const int threads = static_cast<int>(st.range(2));
    const bool decode = T <= 16;
    Eigen::setNbThreads(threads);
    // Decode: rotate weight copies and routings as the moe cases do, so that both read from DRAM.
    const rotation rot(s, T, 3 * s.E * s.H * s.F * sizeof(float));
    auto& srcs = held<std::vector<std::unique_ptr<source_weights<float>>>>(std::string("eigen/") + s.name);
    while (srcs.size() < rot.copies) srcs.push_back(std::make_unique<source_weights<float>>(s, 1));
    const auto xm = moe::synthetic_logits(T, s.H, moe::skew{}, 7);
    using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RM> X(xm.values.data(), static_cast<Eigen::Index>(T), static_cast<Eigen::Index>(s.H));
    RM Y;
    double flops = 0, bytes = 0;
    std::size_t it = 0;
    for (auto _ : st) {
        const auto& plan = rot.plan(it);
        const source_weights<float>& src = *srcs[rot.copy(it++)];
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
            for (long th : {1, 2})
                if (T < 4096 || !moe_bench::smoke()) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(moe_bench::min_time(2.0));
}
void quant_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads"});
    for (long sh : {0, 1})
        for (long T : {1, 16, 512, 4096})
            for (long th : {1, 2})
                if (T < 4096 || !moe_bench::smoke()) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(moe_bench::min_time(0.5));
}
void int4_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads", "group"});
    for (long sh : {0, 1})
        for (long T : {1, 16, 512, 4096})
            for (long th : {1, 2})
                if (T < 4096 || !moe_bench::smoke()) b->Args({sh, T, th, 128});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(moe_bench::min_time(0.5));
}
void decode_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"shape", "T", "threads"});
    for (long sh : {0, 1})
        for (long T : {1, 4, 16})
            for (long th : {1, 2}) b->Args({sh, T, th});
    b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(moe_bench::min_time(0.3));
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
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::q5_1)->Name("BM_Experts/q5_1")->Apply(quant_args);
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
BENCHMARK_TEMPLATE(BM_QuantExperts, fmts::mxfp4_dot)->Name("BM_Experts/mxfp4:dot")->Apply(quant_args);
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
    std::fprintf(stderr, "machine: L3 %.0f MiB (sysfs); decode cases read %.0f MiB per rotation%s\n",
                 static_cast<double>(moe::machine::l3_bytes()) / (1 << 20), static_cast<double>(moe_bench::decode_rotation_bytes()) / (1 << 20),
                 moe_bench::smoke() ? " (smoke mode: one copy, figures mean nothing)" : "");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
