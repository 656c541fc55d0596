// moe-layer: the MoE block of layer N of a real checkpoint (a Hugging Face folder or a
// llama.cpp .gguf file), loaded through moe's readers and run with the model's own router.
//
//   moe-layer --model /models/Qwen3-30B-A3B --layer 12 --tokens 64
//   moe-layer --model model.gguf --layer 3 --input hidden.npy --dump out/
//   moe-layer --model DIR --layer 5 --capacity-factor 1.0 --reroute --compare
//   moe-layer --model DIR --dump-router-logits trace.npy --input hidden.npy   # [L, T, E]
//   moe-layer --model DIR --record rec/ --input hidden.npy         # every layer's routing
//   moe-layer --model DIR --layer 3 --replay rec/ --input hidden.npy
//   moe-layer --model DIR --layer 3 --compare --stats               # SER / top-k table, statistics
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#if defined(__linux__)
#include <sys/resource.h>
#endif
#include <sys/stat.h>
#include <vector>

#include <moe/metrics.hpp>
#include <moe/models/checkpoint.hpp>
#include <moe/moe.hpp>
#include <moe/analysis/synthetic.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#define MOE_CLI_TOOL "moe-layer"
#include "cli_args.hpp"

namespace {

const char* const usage = R"(usage: moe-layer --model PATH [options]

  --model PATH            a Hugging Face folder (config.json + *.safetensors) or a .gguf file
  --layer N               the MoE layer to run                                  (default: the first)
  --input FILE.npy        T x H float32 hidden states (default: --tokens random ones)
  --tokens T              random hidden states, N(0, 1)                         (default 16)
  --seed N                seed of the random hidden states                      (default 0)
  --threads N             threads (default: all)
  --experts FMT           the routed experts' weights: 'file' (default) keeps the format they are
                          stored in where moe runs it without a float copy (every GGUF type
                          of the format registry, the mixed Q4_K_M / Q5_K_M / Q3_K_M / Q2_K
                          layers, FP8 and GPT-OSS MXFP4 checkpoints) and reads float32 otherwise; or a format to
                          convert them to (f32, bf16, q4_k, int4:128, ...)
  --requant LIST:FMT      requantize experts LIST (e.g. 0,3-5) to FMT from their float32 values
                          (hot experts in q8_0, cold ones left in the file's q4_k ...): each expert
                          runs in its own format; prints the packed bytes it costs and the change of
                          the output against the layer in the file's formats. Repeatable.
  --info                  print the experts' format, their bytes in the file and packed (gate+up,
                          down per expert), the arch, load time and peak RSS
  --dump DIR              write output.npy (T x H), router_logits.npy (T x E), indices.npy and
                          weights.npy (T x k) of the final routing
  --dump-router-logits F  route through every MoE layer's router and write their logits as an
                          [L, T, E] trace (float32): --input is [T, H] (the same states for every
                          layer: a routing-only pass) or [L, T, H] (per-layer states)
routing research (docs/research.md)
  --record DIR            route every MoE layer (as --dump-router-logits: --input [T, H] or [L, T, H])
                          and write the routing as a record: DIR/indices.npy, weights.npy [L, T, k]
                          and DIR/record.json (model, layers, recipe, tie rule, moe version);
                          with --top-k / --ser, the reduced routing
  --replay DIR            run --layer with the routing recorded in DIR (its indices and weights)
                          instead of the router's; prints how many tokens the router would route
                          differently and the output's change against the router's own routing
  --top-k K               route K experts, below the recipe's k
  --ser KMIN,T            smart expert reduction: keep each token's first KMIN experts and those
                          weighing at least T x its top weight
  --stats                 routing statistics of the layer (docs/research.md); --json FILE writes them
  --compare               without capacity options: per policy (the recipe's k, smaller top-k, SER
                          settings, and --top-k / --ser if given) print experts per token, expert
                          MB a decode step reads, the layer's time, and the output's change
                          against the recipe (relative L2, max)
capacity-aware inference on the model's real router (off: dropless)
  --capacity-factor F     expert capacity = ceil(T k / E * F) (Megatron formula)
  --drop-policy P         weight | score | position | slot_major | batch_prioritized | random
  --reroute               reroute overflow to each token's next-best expert with room
  --fill-in               fill idle capacity with the best unrouted tokens (Rectify-Router)
  --compare               also run dropless and print the relative change of the output
)";


struct options {
    std::string model, input, dump, trace, experts = "file", record, replay, json;
    bool stats = false;
    std::size_t top_k = 0;
    moe::ser_config ser;
    std::vector<std::string> requant;
    bool info = false;
    std::size_t layer = static_cast<std::size_t>(-1), T = 16, threads = 0;
    std::uint64_t seed = 0;
    bool compare = false;
    moe::layer_options layer_opt;
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
        } else if (a == "--model") o.model = next();
        else if (a == "--layer") o.layer = to_size(a, next());
        else if (a == "--input") o.input = next();
        else if (a == "--tokens") o.T = to_size(a, next());
        else if (a == "--seed") o.seed = to_size(a, next());
        else if (a == "--threads") o.threads = to_size(a, next());
        else if (a == "--dump") o.dump = next();
        else if (a == "--experts") o.experts = next();
        else if (a == "--info") o.info = true;
        else if (a == "--requant") o.requant.push_back(next());
        else if (a == "--dump-router-logits") o.trace = next();
        else if (a == "--compare") o.compare = true;
        else if (a == "--record") o.record = next();
        else if (a == "--replay") o.replay = next();
        else if (a == "--stats") o.stats = true;
        else if (a == "--json") o.json = next();
        else if (a == "--top-k") {
            o.top_k = to_size(a, next());
            if (o.top_k == 0) fail("moe.cli.value", "--top-k needs K >= 1");
        } else if (a == "--ser") {
            const std::string v = next();
            const auto comma = v.find(',');
            if (comma == std::string::npos) fail("moe.cli.value", "--ser expects KMIN,T (e.g. 1,0.3), got '" + v + "'");
            o.ser.k_min = to_size(a, v.substr(0, comma));
            o.ser.threshold = to_double(a, v.substr(comma + 1));
            if (o.ser.k_min == 0) fail("moe.cli.value", "--ser needs KMIN >= 1");
        }
        else if (a == "--capacity-factor") {
            o.layer_opt.capacity = true;
            o.layer_opt.drop.capacity.factor = to_double(a, next());
        } else if (a == "--drop-policy") {
            o.layer_opt.capacity = true;
            const std::string v = next();
            try {
                o.layer_opt.drop.policy = moe::parse_drop_policy(v);
            } catch (const moe::error& e) {
                fail("moe.cli.value", std::string("--drop-policy: ") + e.what());
            }
        } else if (a == "--reroute") {
            o.layer_opt.capacity = true;
            o.layer_opt.drop.reroute = true;
        } else if (a == "--fill-in") {
            o.layer_opt.capacity = true;
            o.layer_opt.fill_in = true;
        } else {
            fail("moe.cli.option", "unknown option '" + a + "' (see --help)");
        }
    }
    if (o.model.empty()) fail("moe.cli.option", "--model PATH is required (see --help)");
    if (!o.json.empty() && !o.stats) fail("moe.cli.option", "--json goes with --stats");
    if (!o.replay.empty() && (o.top_k || o.ser.active())) fail("moe.cli.option", "--replay gives the routing: --top-k and --ser do not apply");
    if (!o.record.empty() && !o.trace.empty()) fail("moe.cli.option", "--record and --dump-router-logits are separate passes: give one");
    o.layer_opt.top_k = o.top_k;
    o.layer_opt.ser = o.ser;
    return o;
}

/// The layer's tensors of routed experts as the file stores them: name, type, bytes.
void print_info(const moe::models::checkpoint& ck, std::size_t L, const moe::block_spec& s) {
    std::printf("arch: %s\n", moe::arch_description().c_str());
    std::size_t total = 0;
    if (const moe::io::gguf_file* g = ck.gguf()) {
        const std::string p = "blk." + std::to_string(L) + ".ffn_";
        for (const auto& t : g->tensors())
            if (t.name.compare(0, p.size(), p) == 0 && t.name.find("_exps.") != std::string::npos) {
                std::printf("  %-40s %-6s %12zu bytes\n", t.name.c_str(), t.type_name(), static_cast<std::size_t>(t.bytes));
                total += t.bytes;
            }
    } else {
        const std::string p = "model.layers." + std::to_string(L) + ".";
        std::size_t n = 0;
        for (const std::string& name : ck.hf()->names())
            if (name.compare(0, p.size(), p) == 0 && name.find(".experts.") != std::string::npos) {
                const moe::io::tensor_view t = ck.hf()->tensor(name);
                if (n++ < 6) std::printf("  %-56s %-7s %12zu bytes\n", name.c_str(), moe::io::dtype_name(t.type), t.bytes);
                total += t.bytes;
            }
        if (n > 6) std::printf("  ... %zu expert tensors in all\n", n);
    }
    std::printf("  expert tensors: %zu bytes in the file (%.3f bytes per weight)\n", total,
                static_cast<double>(total) / (3.0 * static_cast<double>(s.num_experts * s.hidden * s.ffn)));
}

/// One --requant: experts (ascending, distinct) and the format they are converted to.
struct requant_spec {
    std::vector<std::int32_t> experts;
    moe::kernels::weight_format format;
};

/// "0,3-5:q8_0" for a layer of E experts. Throws [moe.cli.value] via fail().
requant_spec parse_requant(const std::string& v, std::size_t E) {
    const std::size_t colon = v.find(':');
    auto bad = [&] { fail("moe.cli.value", "--requant: expected EXPERTS:FORMAT (e.g. 0,3-5:q8_0), got '" + v + "'"); };
    if (colon == std::string::npos || colon == 0) bad();
    requant_spec r;
    try {
        r.format = moe::kernels::parse_weight_format(v.substr(colon + 1));
    } catch (const moe::error& e) {
        fail("moe.cli.value", std::string("--requant: ") + e.what());
    }
    std::vector<bool> on(E, false);
    std::size_t i = 0;
    const std::string list = v.substr(0, colon);
    while (i < list.size()) {
        std::size_t j = list.find(',', i);
        if (j == std::string::npos) j = list.size();
        const std::string item = list.substr(i, j - i);
        const std::size_t dash = item.find('-');
        auto num = [&](const std::string& t) -> std::size_t {
            if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 9) bad();
            return static_cast<std::size_t>(std::stoul(t));
        };
        const std::size_t a = num(item.substr(0, dash)), b = dash == std::string::npos ? a : num(item.substr(dash + 1));
        if (b < a) bad();
        if (b >= E) fail("moe.cli.value", "--requant: expert " + std::to_string(b) + " outside [0, " + std::to_string(E) + ")");
        for (std::size_t e = a; e <= b; ++e) on[e] = true;
        i = j + 1;
    }
    for (std::size_t e = 0; e < E; ++e)
        if (on[e]) r.experts.push_back(static_cast<std::int32_t>(e));
    return r;
}

std::size_t requant_count(const std::vector<requant_spec>& r) {
    std::size_t n = 0;
    for (const auto& x : r) n += x.experts.size();
    return n;
}

/// "0,3,5".
std::string list_string(const std::vector<std::int32_t>& v) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
    return out;
}

using set_t = moe::kernels::expert_set<moe::default_arch>;
using block_t = moe::block<moe::default_arch, moe::kernels::per_expert>;

/// Layer L's routed experts as an expert set: those of `requant` converted from their float32
/// values (read one expert at a time by `fl`), the others in `wf`, from the file's bytes
/// (`in_place`) or converted the same way.
set_t make_experts(const moe::models::checkpoint& ck, std::size_t L, const moe::block_spec& s, const moe::kernels::weight_format& wf,
                   bool in_place, const std::vector<requant_spec>& requant, const moe::models::checkpoint::expert_reader* fl,
                   const moe::kernels::pack_options& packing) {
    const std::size_t E = s.num_experts;
    set_t set(E, s.hidden, s.ffn);
    auto convert = [&](std::vector<std::int32_t> ids, const moe::kernels::weight_format& to) {
        moe::kernels::add_converted_from(set, std::move(ids), to,
                                         [&](std::size_t e, float* w1, float* w3, float* w2) { fl->read(e, w1, w3, w2); }, packing);
    };
    std::vector<bool> moved(E, false);
    for (const auto& r : requant)
        for (auto e : r.experts) moved[static_cast<std::size_t>(e)] = true;
    std::vector<std::int32_t> rest;
    for (std::size_t e = 0; e < E; ++e)
        if (!moved[e]) rest.push_back(static_cast<std::int32_t>(e));
    if (!rest.empty()) {
        if (in_place) {
            moe::kernels::visit_format(wf, [&](auto tag) {
                using W = decltype(tag);
                if constexpr (!moe::kernels::is_weight_type_v<W>) {
                    // Only the experts kept in the file's format are read and packed.
                    auto pw = ck.pack_experts<W>(L, packing, rest.size() == E ? std::vector<std::int32_t>{} : rest);
                    set.add<W>(std::move(rest), std::move(pw), wf.to_string());
                }
            });
        } else {
            convert(std::move(rest), wf);
        }
    }
    for (const auto& r : requant) convert(r.experts, r.format);
    return set;
}

template <class Executor>
void run_layer(const options& o, const moe::models::checkpoint& ck, std::size_t L, const moe::kernels::weight_format& wf, bool in_place,
               Executor&& ex);

template <class Executor>
void run(const options& o, Executor&& ex) {
    moe::models::checkpoint ck(o.model);
    ck.set_warnings([](const std::string& m) { std::fprintf(stderr, "moe-layer: warning: %s\n", m.c_str()); });
    if (!o.trace.empty() || !o.record.empty()) {
        // A routing-only pass through every MoE layer: router logits (--dump-router-logits) or
        // the routing itself (--record).
        const std::vector<std::size_t> layers = ck.moe_layers();
        if (layers.empty()) fail("moe.cli.value", o.model + " has no MoE layer");
        const moe::models::loaded_block b0 = ck.load(layers[0], false);
        const std::size_t H = b0.spec.hidden, E = b0.spec.routed_experts(), k0 = b0.spec.router.top_k;
        // --record with --top-k / --ser records the reduced routing (what the block would run).
        const std::size_t k = o.top_k ? moe::with_top_k(b0.spec.router, o.top_k).top_k : k0;
        if (o.ser.active()) o.ser.validate(k);
        moe::io::npy_array in;
        std::size_t T = o.T;
        std::vector<float> states;
        if (!o.input.empty()) {
            in = moe::io::read_npy(o.input);
            if (in.descr != "<f4" || (in.shape.size() != 2 && in.shape.size() != 3) || in.shape.back() != H ||
                (in.shape.size() == 3 && in.shape[0] != layers.size()))
                fail("moe.cli.value", o.input + ": expected float32 [T, " + std::to_string(H) + "] or [" + std::to_string(layers.size()) + ", T, " +
                                          std::to_string(H) + "], got " + in.descr + " " + moe::io::shape_string(in.shape));
            T = in.shape[in.shape.size() - 2];
            states.resize(in.size());
            std::memcpy(states.data(), in.bytes.data(), states.size() * 4);
        } else {
            moe::splitmix64 rng(o.seed);
            states.resize(T * H);
            for (float& v : states) v = static_cast<float>(rng.normal());
        }
        std::vector<float> trace(layers.size() * T * E);
        moe::routing_record rec;
        rec.num_layers = layers.size();
        rec.num_tokens = T;
        rec.num_experts = E;
        rec.top_k = k;
        rec.layers = layers;
        rec.model = o.model;
        rec.recipe = moe::router_recipe_json(o.top_k ? moe::with_top_k(b0.spec.router, o.top_k) : b0.spec.router);
        rec.recipe["family"] = b0.spec.family;
        if (o.ser.active()) rec.recipe["ser"] = {{"k_min", o.ser.k_min}, {"threshold", o.ser.threshold}};
        moe::router_workspace<float> ws;
        moe::replay_workspace<float> rws;
        for (std::size_t l = 0; l < layers.size(); ++l) {
            const moe::models::loaded_block b = ck.load(layers[l], false);
            if (b.spec.routed_experts() != E || b.spec.router.top_k != k0) fail("moe.cli.value", "layers differ in expert count or k");
            const moe::packed_gate g = moe::pack_gate(moe::matrix_view<const float>(b.weights.router_w.data(), E, H));
            const float* x = states.data() + (in.shape.size() == 3 ? l * T * H : 0);
            const moe::matrix_view<float> lg(trace.data() + l * T * E, T, E);
            moe::gate_into(lg, moe::matrix_view<const float>(x, T, H), g, moe::vector_view<float>(b.weights.router_b), ex);
            if (!o.record.empty()) {
                // The block's own routing stage: its recipe and selection bias.
                const moe::router_config cfg = o.top_k ? moe::with_top_k(b.spec.router, o.top_k) : b.spec.router;
                moe::routing<float> r(T, E, k, false);
                moe::route_into(r, moe::matrix_view<const float>(lg), cfg, moe::vector_view<float>(b.weights.selection_bias), ws, ex);
                if (o.ser.active()) moe::reduce_experts(r, moe::matrix_view<const float>(lg), cfg, o.ser, rws, ex);
                rec.indices.insert(rec.indices.end(), r.indices.begin(), r.indices.end());
                rec.weights.insert(rec.weights.end(), r.weights.begin(), r.weights.end());
            }
        }
        if (!o.record.empty()) {
            moe::write_record(o.record, rec);
            std::printf("wrote %s/{indices,weights}.npy [%zu, %zu, %zu] and record.json: the routing of %zu MoE layers\n", o.record.c_str(),
                        layers.size(), T, k, layers.size());
            return;
        }
        moe::io::write_npy(o.trace, trace.data(), {layers.size(), T, E});
        std::printf("wrote %s: router logits of %zu MoE layers x %zu tokens x %zu experts\n", o.trace.c_str(), layers.size(), T, E);
        return;
    }

    std::size_t L = o.layer;
    if (L == static_cast<std::size_t>(-1)) {
        const auto layers = ck.moe_layers();
        if (layers.empty()) fail("moe.cli.value", o.model + " has no MoE layer");
        L = layers[0];
    }
    const std::string stored = ck.expert_format(L);
    const bool in_place = o.experts == "file" && !stored.empty();
    moe::kernels::weight_format wf;
    try {
        wf = moe::kernels::parse_weight_format(o.experts == "file" ? (stored.empty() ? "f32" : stored) : o.experts);
    } catch (const moe::error& e) {
        fail("moe.cli.value", std::string("--experts: ") + e.what());
    }
    run_layer(o, ck, L, wf, in_place, ex);
}

/// Layer L with its routed experts in format `wf` (from the file's bytes where `in_place`),
/// the experts of each --requant in theirs.
template <class Executor>
void run_layer(const options& o, const moe::models::checkpoint& ck, std::size_t L, const moe::kernels::weight_format& wf, bool in_place,
               Executor&& ex) {
    const moe::models::loaded_block b = ck.load_without_experts(L);
    std::vector<requant_spec> requant;
    for (const auto& v : o.requant) requant.push_back(parse_requant(v, b.spec.num_experts));
    // Converted experts are read as float32 one at a time (from a GGUF file, each expert's own
    // rows): a conversion holds one expert in float32, not the layer.
    std::unique_ptr<moe::models::checkpoint::expert_reader> floats;
    if (!in_place || !requant.empty()) floats = std::make_unique<moe::models::checkpoint::expert_reader>(ck.expert_floats(L));
    auto make = [&](moe::layer_options lo, const std::vector<requant_spec>& rq) {
        lo.format = wf.params;
        return std::make_unique<block_t>(b.spec, b.weights, make_experts(ck, L, b.spec, wf, in_place, rq, floats.get(), lo.packing), lo);
    };
    const auto tl = std::chrono::steady_clock::now();
    const std::unique_ptr<block_t> blk = make(o.layer_opt, requant);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tl).count();
    block_t& block = *blk;
    const auto& s = b.spec;
    const std::size_t H = s.hidden;
    moe::matrix<float> x;
    if (!o.input.empty()) {
        x = moe::io::read_npy_matrix<float>(o.input);
        if (x.cols != H) fail("moe.cli.value", o.input + " has " + std::to_string(x.cols) + " columns; the model's hidden size is " + std::to_string(H));
    } else {
        x = moe::matrix<float>(o.T, H);
        moe::splitmix64 rng(o.seed);
        for (float& v : x.values) v = static_cast<float>(rng.normal());
    }
    const std::size_t T = x.rows;
    std::printf("%s layer %zu: %s, %zu experts (top-%zu, %s), hidden %zu, ffn %zu", o.model.c_str(), L, s.family.c_str(), s.num_experts,
                s.router.top_k, moe::to_string(s.router.score), H, s.ffn);
    if (s.shared_ffn) std::printf(", shared ffn %zu%s", s.shared_ffn, s.shared == moe::shared_gate::sigmoid ? " (sigmoid gate)" : "");
    const set_t& set = block.packed_experts();
    for (std::size_t g = 0; g < set.num_groups(); ++g) {
        const auto& gi = set.group(g);
        const bool base = g == 0 && (requant.empty() || gi.experts.size() + requant_count(requant) == s.num_experts);
        if (base) {
            std::printf("\nexperts: %s (%s), %zu bytes packed per expert", gi.format.c_str(),
                        in_place ? "the file's bytes, no float copy" : "converted from float32", gi.expert_bytes);
            if (gi.experts.size() < s.num_experts) std::printf(" (%zu of %zu experts)", gi.experts.size(), s.num_experts);
        } else {
            std::printf("\nexperts %s: %s (requantized from float32), %zu bytes packed per expert", list_string(gi.experts).c_str(),
                        gi.format.c_str(), gi.expert_bytes);
        }
    }
    std::printf("\n");
    if (o.info) {
        print_info(ck, L, s);
        std::printf("  packed: %zu bytes in all (%s)\n", set.bytes(),
                    in_place ? "a packed copy of the file's blocks; the mapped pages it read are released"
                             : "converted from the float32 values");
        for (std::size_t g = 0; g < set.num_groups(); ++g) {
            const auto& gi = set.group(g);
            std::printf("  packed %s (%zu experts): gate+up %zu, down %zu bytes per expert\n", gi.format.c_str(), gi.experts.size(),
                        gi.up_bytes, gi.down_bytes);
        }
    }
    moe::matrix<float> y(T, H);
    const auto t0 = std::chrono::steady_clock::now();
    block.forward(y.view(), x.view(), ex);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto& r = block.last_routing();
    const auto m = moe::measure(r);
    std::printf("%zu tokens in %.3f ms; expert loads max/mean %.3f, drop rate %.4f\n", T, ms, m.max_over_mean, m.drop_rate);
#if defined(__linux__)
    if (o.info) {
        // Peak resident memory so far (load, pack, one forward): what the memory bound of
        // docs/tools.md is checked against (tests/check_layer_rss.cmake).
        struct rusage ru {};
        ::getrusage(RUSAGE_SELF, &ru);
        std::printf("load and pack %.3f s; peak RSS %.1f MiB\n", load_s, static_cast<double>(ru.ru_maxrss) / 1024.0);
    }
#else
    static_cast<void>(load_s);
#endif
    if (o.layer_opt.capacity) {
        const auto& rep = block.last_capacity();
        std::printf("capacity %zu: dropped %zu slots, rerouted %zu, filled %zu\n", rep.capacity, rep.dropped.size(), rep.rerouted.size(),
                    block.last_fill_in().filled);
    }
    if (!requant.empty()) {
        // The cost of the requantized experts: bytes, and the output against the file's formats.
        const std::unique_ptr<block_t> file = make(o.layer_opt, {});
        moe::matrix<float> y0(T, H);
        file->forward(y0.view(), x.view(), ex);
        double num = 0, den = 0, mx = 0;
        for (std::size_t i = 0; i < y.values.size(); ++i) {
            const double d = static_cast<double>(y.values[i]) - y0.values[i];
            num += d * d;
            den += std::pow(static_cast<double>(y0.values[i]), 2);
            mx = std::max(mx, std::fabs(d));
        }
        const double b1 = static_cast<double>(set.bytes()), b0 = static_cast<double>(file->packed_experts().bytes());
        std::printf("requantized: %zu bytes packed (in %s: %zu, %+.1f%%); vs %s: relative L2 change of the output %.6f, max |change| %.3g\n",
                    set.bytes(), wf.to_string().c_str(), file->packed_experts().bytes(), 100.0 * (b1 - b0) / b0, wf.to_string().c_str(),
                    den > 0 ? std::sqrt(num / den) : 0.0, mx);
    }
    auto change = [](const moe::matrix<float>& a, const moe::matrix<float>& ref, double& rel, double& mx) {
        double num = 0, den = 0;
        mx = 0;
        for (std::size_t i = 0; i < a.values.size(); ++i) {
            const double d = static_cast<double>(a.values[i]) - ref.values[i];
            num += d * d;
            den += std::pow(static_cast<double>(ref.values[i]), 2);
            mx = std::max(mx, std::fabs(d));
        }
        rel = den > 0 ? std::sqrt(num / den) : 0.0;
    };
    if (o.compare && o.layer_opt.capacity) {
        const std::unique_ptr<block_t> dropless = make(moe::layer_options{}, requant);
        moe::matrix<float> y0(T, H);
        dropless->forward(y0.view(), x.view(), ex);
        double rel = 0, mx = 0;
        change(y, y0, rel, mx);
        std::printf("vs dropless: relative L2 change of the output %.6f\n", rel);
    }
    if (o.stats) {
        // Scores for the routing entropy: the router's, on the logits of this forward.
        moe::routing<float> rs = r;
        moe::router_config sc = block.options().router;
        sc.keep_scores = true;
        rs.scores = moe::route(block.last_logits(), sc).scores;
        const moe::routing_statistics st = moe::routing_stats(rs);
        std::printf("routing statistics: routed %zu slots, load max/mean %.3f, cv %.3f, Jain %.3f, load entropy %.3f (ln E %.3f), "
                    "routing entropy %.3f, adjacent overlap %.3f\n",
                    st.routed, st.max_over_mean, st.cv, st.jain, st.load_entropy, std::log(static_cast<double>(r.num_experts)),
                    st.routing_entropy, st.adjacent_overlap);
        if (!o.json.empty()) {
            nlohmann::json j;
            j["layer"] = L;
            j["load"] = st.load;
            j["routed"] = st.routed;
            for (auto [key, v] : {std::pair<const char*, double>{"max_over_mean", st.max_over_mean}, {"cv", st.cv}, {"jain", st.jain},
                                  {"load_entropy", st.load_entropy}, {"routing_entropy", st.routing_entropy},
                                  {"adjacent_overlap", st.adjacent_overlap}})
                j[key] = std::isnan(v) ? nlohmann::json() : nlohmann::json(v);
            std::ofstream f(o.json);
            f << j.dump(2) << "\n";
            f.close();
            if (!f) fail("moe.cli.output", "failed writing " + o.json);
            std::printf("wrote %s\n", o.json.c_str());
        }
    }
    if (!o.replay.empty()) {
        const moe::routing_record rec = moe::read_record(o.replay);
        const std::size_t pos = rec.position_of(L);
        if (rec.num_experts != s.routed_experts())
            fail("moe.record.shape", o.replay + ": the record routes over " + std::to_string(rec.num_experts) + " experts, layer " +
                                         std::to_string(L) + " has " + std::to_string(s.routed_experts()));
        const moe::routing<float> own = r;
        const moe::matrix<float> y_own = y;
        moe::matrix<float> yr(T, H);
        // A record made with --top-k K < the recipe's k replays on a block routing K experts.
        if (rec.top_k < s.router.top_k) block.set_reduction(rec.top_k);
        block.forward_replay(yr.view(), x.view(), rec.layer_indices(pos), rec.layer_weights(pos), ex);
        const auto& rr = block.last_routing();
        std::size_t differ = 0;
        for (std::size_t t = 0; t < T; ++t) {
            std::vector<std::int32_t> mine(own.indices.begin() + t * own.top_k, own.indices.begin() + (t + 1) * own.top_k);
            std::vector<std::int32_t> given(rr.indices.begin() + t * rr.top_k, rr.indices.begin() + (t + 1) * rr.top_k);
            given.erase(std::remove(given.begin(), given.end(), -1), given.end());
            std::sort(mine.begin(), mine.end());
            std::sort(given.begin(), given.end());
            differ += mine != given;
        }
        double rel = 0, mx = 0;
        change(yr, y_own, rel, mx);
        std::printf("replayed layer %zu from %s (%s weights): %zu of %zu tokens routed differently from this router; "
                    "vs its own routing: relative L2 change of the output %.6g, max |change| %.3g\n",
                    L, o.replay.c_str(), rec.weights.empty() ? "recomputed" : "recorded", differ, T, rel, mx);
        y = yr;
    }
    if (o.compare && !o.layer_opt.capacity) {
        // Expert reduction: each policy against the recipe's own k.
        struct policy {
            std::string name;
            std::size_t top_k;
            moe::ser_config ser;
        };
        const std::size_t k = s.router.top_k;
        std::vector<policy> ps{{"top-" + std::to_string(k) + " (recipe)", 0, {}}};
        for (std::size_t kk : {k - 1, k / 2})
            if (kk >= 1 && kk < k && ps.back().top_k != kk) ps.push_back({"top-" + std::to_string(kk), kk, {}});
        const std::pair<std::size_t, double> sers[] = {{1, 0.1}, {1, 0.3}, {1, 0.5}};
        for (const auto& [km, th] : sers)
            if (k > 1) ps.push_back({"ser " + std::to_string(km) + "," + std::to_string(th).substr(0, 3), 0, {km, th}});
        if (o.top_k || o.ser.active()) {
            char nm[64];
            std::snprintf(nm, sizeof nm, "given (top-%zu, ser %zu,%.2f)", o.top_k ? o.top_k : k, o.ser.k_min, o.ser.threshold);
            ps.push_back({nm, o.top_k, o.ser});
        }
        const double expert_mb = static_cast<double>(set.bytes()) / static_cast<double>(s.num_experts) / 1e6;
        std::printf("\n%-28s %12s %16s %10s %12s %12s\n", "policy", "experts/tok", "MB/decode step", "ms", "rel L2", "max |dy|");
        moe::matrix<float> yf(T, H), yp(T, H);
        for (std::size_t i = 0; i < ps.size(); ++i) {
            block.set_reduction(ps[i].top_k, ps[i].ser);
            double best = 1e300;
            for (int rep = 0; rep < 3; ++rep) {
                const auto t1 = std::chrono::steady_clock::now();
                block.forward((i == 0 ? yf : yp).view(), x.view(), ex);
                best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count());
            }
            const double ept = moe::mean_experts_per_token(block.last_routing());
            double rel = 0, mx = 0;
            if (i > 0) change(yp, yf, rel, mx);
            std::printf("%-28s %12.3f %16.2f %10.3f %12.6f %12.3g\n", ps[i].name.c_str(), ept, ept * expert_mb, best, rel, mx);
        }
        block.set_reduction(o.top_k, o.ser);
    }
    if (!o.dump.empty()) {
        ::mkdir(o.dump.c_str(), 0755);
        const auto lg = block.last_logits();
        moe::io::write_npy(o.dump + "/output.npy", y.values.data(), {T, H});
        moe::io::write_npy(o.dump + "/router_logits.npy", lg.data, {T, s.num_experts});
        moe::io::write_npy(o.dump + "/indices.npy", r.indices.data(), {T, r.top_k});
        moe::io::write_npy(o.dump + "/weights.npy", r.weights.data(), {T, r.top_k});
        std::printf("wrote %s/{output,router_logits,indices,weights}.npy\n", o.dump.c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    const options o = parse(argc, argv);
    try {
#if defined(_OPENMP)
        const int threads = o.threads ? static_cast<int>(o.threads) : omp_get_max_threads();
        run(o, moe::openmp_executor{threads});
#else
        run(o, moe::serial_executor{});
#endif
    } catch (const moe::error& e) {
        std::fprintf(stderr, "moe-layer: %s\n", e.what());
        return 2;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "moe-layer: [moe.cli.memory] out of memory loading %s\n", o.model.c_str());
        return 2;
    }
    return 0;
}
