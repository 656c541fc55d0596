// mixtral-layer: one sparse MoE block with HF MixtralSparseMoeBlock semantics, run as an engine
// would run it (weights packed once, workspace reused, the caller's threads).
//
//   mixtral-layer                                   # H 1024, F 3584, E 8, top-2, 512 tokens
//   mixtral-layer --dtype bf16 --tokens 16 --threads 2
//   mixtral-layer --dtype q4_k --tokens 1           # GGUF Q4_K experts (also q8_0 int8 int4:128 fp8 mxfp4 ...)
//   mixtral-layer --capacity-factor 1.0 --reroute   # capacity-aware inference
//   mixtral-layer --weights DIR --input x.npy --check y.npy --dump out/
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <moe/block.hpp>
#include <moe/metrics.hpp>
#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#define MOE_CLI_TOOL "mixtral-layer"
#include "cli_args.hpp"

namespace {

const char* const usage = R"(usage: mixtral-layer [options]

shape and run
  --hidden H          hidden size                                  (default 1024)
  --ffn F             expert FFN size                              (default 3584)
  --experts E         number of experts                            (default 8)
  --top-k K           experts per token                            (default 2)
  --tokens T          tokens in the batch                          (default 512)
  --dtype FORMAT      expert weight format: f32 f16 bf16 bf16:dot q8_0 q4_0 q4_1
                      q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl iq4_xs int8
                      int4:G[:zp] fp8 mxfp4 mxfp4:dot q4_k+q6_k q5_k+q6_k q2_k+q3_k
                      q3_k+q4_k q3_k+q5_k q4_k+q5_0 q4_k+q8_0 q5_k+q5_1 q5_k+q8_0
                      (quantized from the f32 weights
                      with the format's reference quantizer; bf16:dot rounds the
                      activations to bf16 for the native vdpbf16ps dot)  (default f32)
  --threads N         threads (default: all)
  --repeat N          forward passes to time                       (default 3)
  --seed N            seed of the random weights and input         (default 0)
weights and data
  --weights DIR       DIR/router.npy (E x H), w1.npy, w3.npy (E x F x H), w2.npy (E x H x F),
                      float32; the shape options are then taken from the files
  --input FILE.npy    the T x H input (float32) instead of random tokens
  --check FILE.npy    compare the output with this T x H reference; exit 1 if
                      max |y - ref| > TOL * max |ref|
  --tolerance TOL     relative tolerance of --check                (default 1e-4)
  --dump DIR          write x, router, w1, w3, w2, logits, indices, weights and y as .npy;
                      quantized formats also w1_dequant, w3_dequant, w2_dequant (the
                      weights the kernels use, as float32)
capacity-aware inference (off: the dropless layer)
  --capacity-factor F expert capacity = ceil(T k / E * F) (Megatron formula)
  --drop-policy P     weight | score | position | slot_major | batch_prioritized | random
  --reroute           reroute overflow to each token's next-best expert with room
  --fill-in           fill idle capacity with the best unrouted tokens (Rectify-Router)
)";


struct options {
    std::size_t H = 1024, F = 3584, E = 8, k = 2, T = 512, repeat = 3, threads = 0;
    std::uint64_t seed = 0;
    std::string dtype = "f32", weights, input, check, dump;
    moe::kernels::weight_format format{"f32", {}};
    double tolerance = 1e-4;
    moe::layer_options layer;
};

options parse(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) fail("moe.cli.value", a + " needs a value");
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        } else if (a == "--hidden") o.H = to_size(a, next());
        else if (a == "--ffn") o.F = to_size(a, next());
        else if (a == "--experts") o.E = to_size(a, next());
        else if (a == "--top-k") o.k = to_size(a, next());
        else if (a == "--tokens") o.T = to_size(a, next());
        else if (a == "--repeat") o.repeat = std::max<std::size_t>(1, to_size(a, next()));
        else if (a == "--threads") o.threads = to_size(a, next());
        else if (a == "--seed") o.seed = to_size(a, next());
        else if (a == "--dtype") {
            o.dtype = next();
            try {
                o.format = moe::kernels::parse_weight_format(o.dtype);
            } catch (const moe::error& e) {
                fail("moe.cli.value", std::string("--dtype: ") + e.what());
            }
        } else if (a == "--tolerance") o.tolerance = to_double(a, next());
        else if (a == "--weights") o.weights = next();
        else if (a == "--input") o.input = next();
        else if (a == "--check") o.check = next();
        else if (a == "--dump") o.dump = next();
        else if (a == "--capacity-factor") {
            o.layer.capacity = true;
            o.layer.drop.capacity.factor = to_double(a, next());
        } else if (a == "--drop-policy") {
            o.layer.capacity = true;
            const std::string v = next();
            try {
                o.layer.drop.policy = moe::parse_drop_policy(v);
            } catch (const moe::error& e) {
                fail(e.id(), std::string(e.what()).substr(e.id().size() + 3));
            }
        } else if (a == "--reroute") {
            o.layer.capacity = true;
            o.layer.drop.reroute = true;
        } else if (a == "--fill-in") {
            o.layer.capacity = true;
            o.layer.fill_in = true;
        } else fail("moe.cli.arg", "unknown option '" + a + "' (see --help)");
    }
    if (o.H == 0 || o.F == 0 || o.E == 0 || o.T == 0) fail("moe.cli.value", "--hidden, --ffn, --experts and --tokens must be >= 1");
    return o;
}

/// A float32 .npy of exactly `shape`.
std::vector<float> read_floats(const std::string& path, const std::vector<std::size_t>& shape) {
    const moe::io::npy_array a = moe::io::read_npy(path);
    if (a.descr != "<f4") fail("moe.cli.weights", path + ": expected float32, got " + a.descr);
    if (a.shape != shape) {
        std::string want, got;
        for (auto d : shape) want += (want.empty() ? "" : " x ") + std::to_string(d);
        for (auto d : a.shape) got += (got.empty() ? "" : " x ") + std::to_string(d);
        fail("moe.cli.weights", path + ": shape " + got + ", expected " + want);
    }
    std::vector<float> v(a.size());
    std::memcpy(v.data(), a.bytes.data(), v.size() * sizeof(float));
    return v;
}

template <class W, class S>
std::vector<W> convert(const std::vector<S>& v) {
    std::vector<W> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<W>(static_cast<float>(v[i]));
    return out;
}

template <class W>
int run(options& o) {
    const std::size_t H = o.H, F = o.F, E = o.E;
    std::vector<float> router, w1, w3, w2;
    const auto t_load = std::chrono::steady_clock::now();
    if (!o.weights.empty()) {
        const moe::io::npy_array r = moe::io::read_npy(o.weights + "/router.npy");
        if (r.shape.size() != 2) fail("moe.cli.weights", o.weights + "/router.npy: expected E x H");
        const moe::io::npy_array a1 = moe::io::read_npy(o.weights + "/w1.npy");
        if (a1.shape.size() != 3) fail("moe.cli.weights", o.weights + "/w1.npy: expected E x F x H");
        o.E = r.shape[0];
        o.H = r.shape[1];
        o.F = a1.shape[1];
        router = read_floats(o.weights + "/router.npy", {o.E, o.H});
        w1 = read_floats(o.weights + "/w1.npy", {o.E, o.F, o.H});
        w3 = read_floats(o.weights + "/w3.npy", {o.E, o.F, o.H});
        w2 = read_floats(o.weights + "/w2.npy", {o.E, o.H, o.F});
    } else {
        moe::splitmix64 rng(o.seed);
        router.resize(E * H);
        for (auto& v : router) v = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(H)));
        const float a = 1.0f / std::sqrt(static_cast<float>(H)), b = 1.0f / std::sqrt(static_cast<float>(F));
        w1.resize(E * F * H);
        w3.resize(E * F * H);
        w2.resize(E * H * F);
        for (auto& v : w1) v = a * static_cast<float>(2.0 * rng.uniform() - 1.0);
        for (auto& v : w3) v = a * static_cast<float>(2.0 * rng.uniform() - 1.0);
        for (auto& v : w2) v = b * static_cast<float>(2.0 * rng.uniform() - 1.0);
    }
    const std::size_t Hs = o.H, Fs = o.F, Es = o.E;
    o.layer.router = moe::presets::mixtral(o.k);
    o.layer.format = o.format.params;
    // The block, and the weights it uses as float32 (for --dump).
    using block_t = moe::block<moe::default_arch, W>;
    std::unique_ptr<block_t> bp;
    std::vector<float> w1d, w3d, w2d;
    if constexpr (moe::kernels::is_weight_type_v<W>) {
        const std::vector<W> w1s = convert<W>(w1), w3s = convert<W>(w3), w2s = convert<W>(w2);
        bp = std::make_unique<block_t>(moe::view(router.data(), Es, Hs), w1s.data(), w3s.data(), w2s.data(), Fs, o.layer);
        w1d = convert<float>(w1s);
        w3d = convert<float>(w3s);
        w2d = convert<float>(w2s);
    } else {
        const auto q = moe::kernels::quantize_experts<W>(w1.data(), w3.data(), w2.data(), Es, Hs, Fs, o.layer.format);
        bp = std::make_unique<block_t>(moe::view(router.data(), Es, Hs), q, Fs, o.layer);
        // Each projection in its own format (a mixed format's gate / up and down differ).
        auto deq = [](auto fmt, const std::vector<moe::kernels::formats::quant_matrix>& ms, std::vector<float>& out) {
            const std::size_t n = ms[0].rows * ms[0].cols;
            out.resize(ms.size() * n);
            for (std::size_t e = 0; e < ms.size(); ++e)
                decltype(fmt)::dequantize(moe::kernels::formats::view_of(ms[e]), out.data() + e * n);
        };
        deq(moe::kernels::formats::up_format_t<W>{}, q.w1, w1d);
        deq(moe::kernels::formats::up_format_t<W>{}, q.w3, w3d);
        deq(moe::kernels::formats::down_format_t<W>{}, q.w2, w2d);
    }
    block_t& block = *bp;
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

    moe::matrix<float> x;
    if (!o.input.empty()) {
        x = moe::io::read_npy_matrix<float>(o.input);
        if (x.cols != Hs) fail("moe.cli.input", o.input + ": " + std::to_string(x.cols) + " columns, hidden=" + std::to_string(Hs));
        o.T = x.rows;
    } else {
        x = moe::synthetic_logits(o.T, Hs, moe::skew{}, o.seed + 1);  // N(0, 1) tokens
    }
    const std::size_t T = o.T;
    moe::matrix<float> y(T, Hs);
#if defined(_OPENMP)
    const int threads = o.threads ? static_cast<int>(o.threads) : omp_get_max_threads();
    const moe::openmp_executor ex{threads};
#else
    const int threads = 1;
    const moe::serial_executor ex{};
#endif
    std::printf("sparse MoE block (Mixtral semantics): %zu tokens, hidden %zu, ffn %zu, %zu experts, top-%zu, %s weights, "
                "%d thread%s\n",
                T, Hs, Fs, Es, o.k, o.format.to_string().c_str(), threads, threads > 1 ? "s" : "");
    std::printf("arch: %s\n", moe::arch_description().c_str());
    std::printf("weights %s, packed in %.2f s (%.1f MiB of experts, %.2f MiB per expert)\n",
                o.weights.empty() ? "seeded random" : o.weights.c_str(), load_s,
                static_cast<double>(block.expert_bytes() * Es) / (1 << 20), static_cast<double>(block.expert_bytes()) / (1 << 20));
    if (o.layer.capacity)
        std::printf("capacity-aware inference: factor %g, drop policy %s%s%s\n", o.layer.drop.capacity.factor,
                    moe::to_string(o.layer.drop.policy), o.layer.drop.reroute ? ", reroute" : "", o.layer.fill_in ? ", fill-in" : "");

    block.forward(y.view(), x, ex);  // warm-up: first touch of the workspace
    // Decode (T <= 16) is bound by the expert weights it reads: each timed forward runs with
    // cold weights, after a read pass over a buffer of twice the L3 (at least 256 MiB) evicts
    // them, and is stated against the read bandwidth measured on that buffer. Prefill is stated
    // against the peak of the unit the format runs on (VNNI for integer formats, vdpbf16ps for
    // bf16:dot, fp32 FMAs otherwise), measured now.
    const bool decode = T <= 16;
    std::vector<float> evict;
    if (decode) evict.assign(std::max(std::size_t(256) << 20, 2 * moe::machine::l3_bytes()) / sizeof(float), 1.0f);
    std::vector<double> times;
    double weight_bytes = 0;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < o.repeat; ++i) {
        if (decode) moe::machine::read_pass(evict, threads);
        const auto t0 = std::chrono::steady_clock::now();
        block.forward(y.view(), x, ex);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        times.push_back(s);
        const auto& plan = block.last_plan();
        for (std::size_t e = 0; e < Es; ++e) weight_bytes += plan.counts[e] > 0 ? static_cast<double>(block.expert_bytes()) : 0.0;
        if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > 1.0)
            std::fprintf(stderr, "\r  forward %zu/%zu: %.1f ms", i + 1, o.repeat, s * 1e3);
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > 1.0) std::fprintf(stderr, "\n");
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2], best = sorted.front();
    const double flops = block.last_flops();
    if (decode) {
        double bw = 0;
        for (int p = 0; p < 3; ++p) bw = std::max(bw, static_cast<double>(evict.size() * sizeof(float)) / moe::machine::read_pass(evict, threads));
        const double per = weight_bytes / static_cast<double>(o.repeat);
        std::printf("forward: %.3f ms median of %zu with cold weights (best %.3f ms): %.0f tokens/s; reads %.1f MB of expert "
                    "weights: %.1f GB/s, %.0f%% of the read bandwidth (%.1f GB/s on %d thread%s, measured now)\n",
                    median * 1e3, o.repeat, best * 1e3, static_cast<double>(T) / median, per * 1e-6, per / median * 1e-9,
                    100.0 * per / median / bw, bw * 1e-9, threads, threads > 1 ? "s" : "");
    } else {
        constexpr moe::machine::unit u = moe::machine::prefill_unit<W>();
        const double peak = moe::machine::peak(u, threads, 4'000'000);
        std::printf("forward: %.3f ms median of %zu (best %.3f ms): %.0f tokens/s, %.1f GFLOP/s, %.0f%% of the %s peak "
                    "(%.0f G%sOP/s on %d thread%s, measured now)\n",
                    median * 1e3, o.repeat, best * 1e3, static_cast<double>(T) / median, flops / median * 1e-9,
                    100.0 * flops / median / peak, moe::machine::to_string(u), peak * 1e-9, u == moe::machine::unit::vnni ? "" : "FL",
                    threads, threads > 1 ? "s" : "");
    }

    const moe::routing<float>& r = block.last_routing();
    const moe::load_metrics m = moe::measure(r);
    std::printf("straggler ratio (max/mean expert load) %.3f, CV %.3f", m.max_over_mean, m.cv);
    if (o.layer.capacity) {
        const auto& rep = block.last_capacity();
        std::printf("; capacity %zu: dropped %zu slots, rerouted %zu", rep.capacity, rep.dropped.size(), rep.rerouted.size());
        if (o.layer.fill_in) std::printf(", filled %zu", block.last_fill_in().filled);
    }
    std::printf("\ntokens per expert:\n");
    const std::size_t shown = std::min<std::size_t>(Es, 32);
    for (std::size_t e = 0; e < shown; ++e) {
        const int bar = m.max_load ? static_cast<int>(40.0 * static_cast<double>(m.load[e]) / static_cast<double>(m.max_load) + 0.5) : 0;
        std::printf("  expert %3zu %7zu %s\n", e, m.load[e], std::string(static_cast<std::size_t>(bar), '#').c_str());
    }
    if (shown < Es) std::printf("  ... %zu more experts\n", Es - shown);

    if (!o.dump.empty()) {
        ::mkdir(o.dump.c_str(), 0755);
        moe::io::write_npy(o.dump + "/x.npy", x.values.data(), {T, Hs});
        moe::io::write_npy(o.dump + "/router.npy", router.data(), {Es, Hs});
        constexpr bool quantized = !moe::kernels::is_weight_type_v<W>;
        // Float formats: the stored weights; quantized: the f32 originals, and the dequantized
        // weights the kernels use beside them.
        moe::io::write_npy(o.dump + "/w1.npy", quantized ? w1.data() : w1d.data(), {Es, Fs, Hs});
        moe::io::write_npy(o.dump + "/w3.npy", quantized ? w3.data() : w3d.data(), {Es, Fs, Hs});
        moe::io::write_npy(o.dump + "/w2.npy", quantized ? w2.data() : w2d.data(), {Es, Hs, Fs});
        if (quantized) {
            moe::io::write_npy(o.dump + "/w1_dequant.npy", w1d.data(), {Es, Fs, Hs});
            moe::io::write_npy(o.dump + "/w3_dequant.npy", w3d.data(), {Es, Fs, Hs});
            moe::io::write_npy(o.dump + "/w2_dequant.npy", w2d.data(), {Es, Hs, Fs});
        }
        const auto lg = block.last_logits();
        moe::io::write_npy(o.dump + "/logits.npy", lg.data, {T, Es});
        moe::io::write_npy(o.dump + "/indices.npy", r.indices.data(), {T, r.top_k});
        moe::io::write_npy(o.dump + "/weights.npy", r.weights.data(), {T, r.top_k});
        moe::io::write_npy(o.dump + "/y.npy", y.values.data(), {T, Hs});
        std::printf("wrote %s/{x,router,w1,w3,w2,%slogits,indices,weights,y}.npy\n", o.dump.c_str(),
                    quantized ? "w1_dequant,w3_dequant,w2_dequant," : "");
    }
    if (!o.check.empty()) {
        const auto ref = moe::io::read_npy_matrix<float>(o.check);
        if (ref.rows != T || ref.cols != Hs) fail("moe.cli.check", o.check + ": shape does not match the output");
        double err = 0, scale = 0;
        for (std::size_t i = 0; i < ref.values.size(); ++i) {
            err = std::max(err, std::fabs(static_cast<double>(y.values[i]) - ref.values[i]));
            scale = std::max(scale, std::fabs(static_cast<double>(ref.values[i])));
        }
        const bool ok = err <= o.tolerance * scale;
        std::printf("check against %s: max |y - ref| = %.3g (%.3g of max |ref|): %s\n", o.check.c_str(), err,
                    scale > 0 ? err / scale : 0.0, ok ? "ok" : "MISMATCH");
        return ok ? 0 : 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    options o = parse(argc, argv);
    try {
        return moe::kernels::visit_format(o.format, [&](auto tag) { return run<decltype(tag)>(o); });
    } catch (const moe::error& e) {
        std::fprintf(stderr, "mixtral-layer: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mixtral-layer: [moe.cli.error] %s\n", e.what());
        return 2;
    }
}
