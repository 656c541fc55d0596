// moe-route: route token logits to experts from the command line and summarise the result.
//
//   moe-route --synthetic 4096,64 --skew zipf:1.2 --preset mixtral --top-k 8
//   moe-route --logits router_logits.npy --preset deepseek_v3 --bias bias.npy --out result/
//
// Options mirror moe::router_config; later stages (capacity, losses, policy comparison) add
// their options to the same tool. Every bad input ends with "moe-route: [id] message", exit 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <moe/kernels/expert_ffn.hpp>
#include <moe/moe.hpp>
#include <moe/analysis/policy_compare.hpp>
#include <moe/analysis/synthetic.hpp>

#include "route_trace.hpp"

namespace {

std::string help_text();

const char* const usage = R"(usage: moe-route (--logits FILE.npy | --synthetic T,E [--skew S] [--seed N]) [options]

input
  --logits FILE.npy        T x E router logits, float32 or float64, C order
  --synthetic T,E          seeded synthetic logits: log(popularity) + N(0,1)
  --skew S                 uniform | zipf:S | dirichlet:A       (default zipf:1.0)
  --seed N                 RNG seed                             (default 0)
router (start from a preset, then override)
  --preset NAME            a recipe by name                     (default mixtral):
                           @PRESETS@
  --score F                softmax | sigmoid | sqrtsoftplus
  --top-k K                experts per token
  --pre-softmax            softmax: top-k of the full softmax
  --post-softmax           softmax: top-k of logits, softmax over the k
  --renormalize[=EPS]      w/sum (no EPS), w/(sum+EPS), or w/max(sum,C) with =clamp:C
  --no-renormalize         keep the selected scores as they are
  --scale F                multiply the final weights
  --bias FILE.npy          E selection-only biases (float32/64, 1-D or 1 x E)
  --groups G               group-limited top-k over G groups
  --group-top-k GK         groups kept per token
  --group-score topm:M|max group score: sum of its M best keys, or its max
  --group-mask neg-inf|zero  what experts of dropped groups get
policy and noise
  --policy P               topk | top-p:P | expert-choice[:CF] | sinkhorn             (default topk)
                           top-p keeps each token's fewest best experts whose probability
                           reaches P; expert-choice: each expert takes its top ceil(T*CF/E)
                           tokens (CF defaults to k); sinkhorn: Megatron's balanced top-k
  --mask FILE.npy          per-token mask, T values (int or float; 0 = padding token, as DeepSpeed
                           used_token / HF attention_mask): padding is not routed, counted or
                           penalised by the losses
  --seq-len S              also report the sequence-level aux loss (Megatron seq_aux_loss) over
                           sequences of S tokens
  --micro-batches M        also report the global-batch aux loss of M equal micro-batches (counts
                           summed before the loss) next to the mean of their own losses
  --null-experts N         the last N logit columns are AdaMoE null experts (synthetic input
                           gets N extra columns): slots routed there are left empty
  --jitter EPS             multiply the logits by U(1-EPS, 1+EPS) before routing (a stand-in
                           for the input jitter, which acts on the gate input)
  --noise gumbel|normal:S  selection noise: Gumbel (DeepSpeed RSample: weights from the clean
                           logits) or N(0,1)*S/E (Tutel gate_noise S)
capacity (off unless a factor, formula or policy is given)
  --capacity-factor F      capacity factor (gamma for capacity_aware)      (default 1.0)
  --capacity N             explicit capacity for every expert (replaces the formula)
  --capacity-formula NAME  megatron | deepspeed | deepspeed_topk | tutel | megablocks | capacity_aware |
                           dropless
  --min-capacity N         lower bound (megatron, deepspeed)
  --capacity-alignment N   round capacity up to a multiple (tutel)
  --drop-policy NAME       weight | score | position | slot_major | batch_prioritized | random
  --renormalize-after-drop[=EPS|=clamp:C]  renormalise kept weights (DeepSpeed: =clamp:1.1920929e-07)
  --reroute                reroute overflow to each token's next-best expert with room
  --placement contiguous:D|FILE.json  expert -> device: split evenly over D devices, or a JSON
                           array of device ids ([0, 0, 1, 1] or {"placement": [...]}); reroute stays
                           on a device, and per-device loads are reported
  --fill-in                fill under-full experts' idle rows with their best unrouted tokens
  --pad-to-capacity        every expert gets exactly capacity rows (padding reported)
  --block-size B           pad each expert's rows to a multiple of B (reports padding waste)
 policy comparison (the routing-policy simulator)
  --compare[=P1,P2,...]    run several policies on the same logits and print a table (drop rate,
                           rerouted, max/mean load, CV, padding, aux loss, z-loss, experts per
                           token, routing time, modelled straggler latency). Policies: dropless,
                           megatron-probs-1.0, megatron-probs-1.25, megatron-position-1.0,
                           deepspeed-1.0, capacity-aware-drop, capacity-aware-reroute,
                           rectify-fill-in, expert-choice, top-p, aux-free-bias (default: all)
  --expert-shape H,F       expert size for the modelled latency (default 1024,3584: per-row
                           cost measured with moe's kernels at startup)
  --bias-steps N           aux-free-bias: update steps on a stream of batches  (default 200)
  --csv FILE               write the comparison table as CSV
  --plot FILE.png          plot per-expert loads per policy and a drop/straggler panel
                           (python3-matplotlib; examples/plot_policies.py)
traces and placement (multi-layer; any of --trace, --loads, --synthetic-trace selects this mode)
  --trace FILE.npy         [L, T, E] router logits (float16/32/64, e.g. moe-layer --dump-router-logits)
                           or [L, T, k] expert indices (any integer dtype; --experts E sizes them)
  --synthetic-trace L,T,E  seeded trace with correlated layers: a token's layer-(l+1) experts are drawn
                           near its layer-l experts (--affinity A, default 4; 0 = independent layers)
  --loads FILE.npy         [L, E] expert loads, counts or floats (what EPLB takes): placement only
  --placement SPEC         (repeatable) eplb:R,G,N,D (DeepSeek EPLB: R replicas, G groups, N nodes,
                           D devices) | contiguous:D | affinity:D (keeps a token's consecutive
                           experts on one device); prints device loads and layer-to-layer traffic
  --replica-policy P       round_robin | least_loaded: how a slot picks a replica (default round_robin)
  --cache M[,M...]         fast memory of M experts per layer: hit rate and bytes moved per token
                           under lru, lfu, belady (optimal) and prefetch (next layer, transitions)
  --expert-bytes B         bytes of one expert for the traffic (default 352321536: Mixtral-8x7B bf16)
  --segment S[,S...]       segment lengths of SRP and SCH, local routing consistency (default 16)
  --out DIR                eplb: DIR/phy2log.npy, log2phy.npy (-1 padded), logcnt.npy as EPLB
                           returns them; affinity / contiguous: DIR/<name>_devices.npy [L, E]
  --write-trace FILE.npy   write the trace's [L, T, k] indices (e.g. a synthetic one)
  --stats                  routing statistics per layer and over the trace: load max/mean, cv, Jain's
                           fairness, load entropy, adjacent-token and layer-to-layer overlap
                           (docs/research.md); --capacity C adds the drop rate a per-expert capacity
                           of C slots would cause; --json FILE writes them as JSON
  --plot FILE.png          hit rate vs cache size per policy, device load per placement
output
  --out DIR                write DIR/indices.npy (int32 T x k), DIR/weights.npy (float32 T x k),
                           DIR/tokens_per_expert.npy, DIR/summary.json; without it, print a
                           summary. Dropped slots have index -1 and weight 0.
  --help                   this text
)";

/// The usage text with the preset names of the registry (presets::preset_names), wrapped.
std::string help_text() {
    std::string names, line;
    for (const char* n : moe::presets::preset_names) {
        const std::string item = line.empty() ? std::string(n) : " | " + std::string(n);
        if (line.size() + item.size() > 70) {
            names += line + " |\n" + std::string(27, ' ');
            line = n;
        } else {
            line += item;
        }
    }
    names += line;
    std::string u = usage;
    const std::size_t at = u.find("@PRESETS@");
    return u.replace(at, 9, names);
}

struct options {
    std::string logits_path, bias_path, out_dir;
    std::size_t synth_tokens = 0, synth_experts = 0;
    bool synthetic = false;
    std::string skew = "zipf:1.0";
    std::uint64_t seed = 0;
    moe::router_config cfg = moe::presets::mixtral();
    bool capacity = false;
    moe::drop_config drop;
    std::size_t placement_devices = 0;
    std::string placement_file;
    std::size_t fixed_capacity = 0;
    bool fill = false;
    bool pad_to_capacity = false;
    std::size_t block = 1;
    std::string policy = "topk";
    double policy_param = 0.0;
    std::size_t null_experts = 0;
    double jitter = 0.0;
    std::string noise;
    double noise_scale = 0.0;
    bool compare = false;
    std::vector<std::string> policies;
    std::size_t expert_h = 1024, expert_f = 3584, bias_steps = 200;
    std::string csv, plot;
    std::string mask_path;                     // per-token mask (0 = padding)
    std::size_t seq_len = 0, micro_batches = 0;  // sequence-level / global-batch aux loss
    std::vector<std::uint8_t> valid;
};

[[noreturn]] void fail(const std::string& id, const std::string& msg) {
    std::fprintf(stderr, "moe-route: [%s] %s\n", id.c_str(), msg.c_str());
    std::exit(2);
}

std::size_t to_size(const std::string& opt, const std::string& v) {
    std::size_t used = 0;
    unsigned long long x = 0;
    try {
        if (v.empty() || v[0] == '-') throw std::invalid_argument("negative");
        x = std::stoull(v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v.size() || v.empty()) fail("moe.cli.value", opt + " expects a non-negative integer, got '" + v + "'");
    return static_cast<std::size_t>(x);
}

double to_double(const std::string& opt, const std::string& v) {
    std::size_t used = 0;
    double x = 0;
    try {
        x = std::stod(v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v.size() || v.empty() || !std::isfinite(x)) fail("moe.cli.value", opt + " expects a number, got '" + v + "'");
    return x;
}

/// --renormalize / --renormalize-after-drop: no value = sum; =EPS = sum + EPS; =clamp:C = clamp.
void parse_renorm(const std::string& opt, bool has_value, const std::string& val, moe::renormalize& mode, float& eps) {
    if (!has_value) {
        mode = moe::renormalize::sum;
    } else if (val.rfind("clamp:", 0) == 0) {
        mode = moe::renormalize::clamp;
        eps = static_cast<float>(to_double(opt, val.substr(6)));
    } else {
        mode = moe::renormalize::sum_eps;
        eps = static_cast<float>(to_double(opt, val));
    }
}

/// Runs a library parser (parse_score_function, ...), turning its moe::error into fail().
template <class F>
auto parsed(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const moe::error& e) {
        fail(e.id(), std::string(e.what()).substr(e.id().size() + 3));
    }
}

options parse(int argc, char** argv) {
    options o;
    // The preset is applied first, whatever its position, so that other flags override it.
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--preset") {
            if (i + 1 >= argc) fail("moe.cli.value", "--preset needs a value");
            o.cfg = parsed([&] { return moe::presets::by_name(argv[i + 1]); });
        }
    }
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i], val;
        const auto eq = a.find('=');
        bool has_eq = false;
        if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
            val = a.substr(eq + 1);
            a = a.substr(0, eq);
            has_eq = true;
        }
        auto next = [&]() -> std::string {
            if (has_eq) return val;
            if (i + 1 >= argc) fail("moe.cli.value", a + " needs a value");
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            std::fputs(help_text().c_str(), stdout);
            std::exit(0);
        } else if (a == "--logits") o.logits_path = next();
        else if (a == "--synthetic") {
            const std::string v = next();
            const auto comma = v.find(',');
            if (comma == std::string::npos) fail("moe.cli.value", "--synthetic expects T,E, got '" + v + "'");
            o.synth_tokens = to_size("--synthetic", v.substr(0, comma));
            o.synth_experts = to_size("--synthetic", v.substr(comma + 1));
            o.synthetic = true;
        } else if (a == "--skew") o.skew = next();
        else if (a == "--seed") o.seed = to_size("--seed", next());
        else if (a == "--mask") o.mask_path = next();
        else if (a == "--seq-len") o.seq_len = to_size("--seq-len", next());
        else if (a == "--micro-batches") o.micro_batches = to_size("--micro-batches", next());
        else if (a == "--preset") next();
        else if (a == "--score") o.cfg.score = parsed([&] { return moe::parse_score_function(next()); }); else if (a == "--top-k") o.cfg.top_k = to_size("--top-k", next());
        else if (a == "--pre-softmax") o.cfg.pre_softmax = true;
        else if (a == "--post-softmax") o.cfg.pre_softmax = false;
        else if (a == "--renormalize") parse_renorm(a, has_eq, val, o.cfg.renorm, o.cfg.renorm_eps);
        else if (a == "--no-renormalize") o.cfg.renorm = moe::renormalize::none;
        else if (a == "--scale") o.cfg.scaling_factor = static_cast<float>(to_double("--scale", next()));
        else if (a == "--bias") o.bias_path = next();
        else if (a == "--groups") o.cfg.num_groups = to_size("--groups", next());
        else if (a == "--group-top-k") o.cfg.group_top_k = to_size("--group-top-k", next());
        else if (a == "--group-score") {
            const std::string v = next();
            if (v == "max") o.cfg.group_score_top_m = 1;
            else if (v.rfind("topm:", 0) == 0) o.cfg.group_score_top_m = to_size("--group-score", v.substr(5));
            else fail("moe.cli.value", "--group-score expects topm:M or max, got '" + v + "'");
        } else if (a == "--group-mask") {
            const std::string v = next();
            if (v == "neg-inf") o.cfg.mask = moe::group_mask::neg_inf;
            else if (v == "zero") o.cfg.mask = moe::group_mask::zero;
            else fail("moe.cli.value", "--group-mask expects neg-inf or zero, got '" + v + "'");
        } else if (a == "--capacity-factor") {
            o.capacity = true;
            o.drop.capacity.factor = to_double("--capacity-factor", next());
        } else if (a == "--capacity-formula") {
            o.capacity = true;
            o.drop.capacity.formula = parsed([&] { return moe::parse_capacity_formula(next()); });
        } else if (a == "--min-capacity") o.drop.capacity.min_capacity = to_size("--min-capacity", next());
        else if (a == "--capacity-alignment") o.drop.capacity.alignment = to_size("--capacity-alignment", next());
        else if (a == "--drop-policy") {
            o.capacity = true;
            o.drop.policy = parsed([&] { return moe::parse_drop_policy(next()); });
        } else if (a == "--renormalize-after-drop") {
            parse_renorm(a, has_eq, val, o.drop.renorm_after, o.drop.renorm_eps);
        } else if (a == "--reroute") {
            o.capacity = true;
            o.drop.reroute = true;
        } else if (a == "--placement") {
            const std::string v = next();
            if (v.rfind("contiguous:", 0) == 0) {
                o.placement_devices = to_size("--placement", v.substr(11));
                if (o.placement_devices == 0) fail("moe.cli.value", "--placement needs at least one device");
            } else {
                o.placement_file = v;
            }
        } else if (a == "--capacity") {
            o.capacity = true;
            o.fixed_capacity = to_size("--capacity", next());
        } else if (a == "--fill-in") {
            o.capacity = true;
            o.fill = true;
        } else if (a == "--pad-to-capacity") {
            o.capacity = true;
            o.pad_to_capacity = true;
        } else if (a == "--policy") {
            const std::string v = next();
            const auto colon = v.find(':');
            o.policy = v.substr(0, colon);
            const bool has = colon != std::string::npos;
            if (has) o.policy_param = to_double("--policy", v.substr(colon + 1));
            if (!(o.policy == "topk" && !has) && !(o.policy == "top-p" && has) && o.policy != "expert-choice" &&
                !(o.policy == "sinkhorn" && !has))
                fail("moe.cli.value", "--policy expects topk, top-p:P, expert-choice[:CF] or sinkhorn, got '" + v + "'");
        } else if (a == "--compare") {
            o.compare = true;
            if (has_eq) {
                std::istringstream items(val);
                std::string item;
                while (std::getline(items, item, ',')) o.policies.push_back(item);
            }
        } else if (a == "--expert-shape") {
            const std::string v = next();
            const auto comma = v.find(',');
            if (comma == std::string::npos) fail("moe.cli.value", "--expert-shape expects H,F, got '" + v + "'");
            o.expert_h = to_size("--expert-shape", v.substr(0, comma));
            o.expert_f = to_size("--expert-shape", v.substr(comma + 1));
            if (!o.expert_h || !o.expert_f) fail("moe.cli.value", "--expert-shape needs H, F >= 1");
        } else if (a == "--bias-steps") o.bias_steps = to_size("--bias-steps", next());
        else if (a == "--csv") o.csv = next();
        else if (a == "--plot") o.plot = next();
        else if (a == "--null-experts") o.null_experts = to_size("--null-experts", next());
        else if (a == "--jitter") o.jitter = to_double("--jitter", next());
        else if (a == "--noise") {
            const std::string v = next();
            if (v == "gumbel") o.noise = v;
            else if (v.rfind("normal:", 0) == 0) {
                o.noise = "normal";
                o.noise_scale = to_double("--noise", v.substr(7));
            } else fail("moe.cli.value", "--noise expects gumbel or normal:S, got '" + v + "'");
        } else if (a == "--block-size") o.block = to_size("--block-size", next());
        else if (a == "--out") o.out_dir = next();
        else fail("moe.cli.arg", "unknown option '" + std::string(argv[i]) + "' (see --help)");
    }
    if (o.synthetic == !o.logits_path.empty())
        fail("moe.cli.input", "give exactly one of --logits FILE.npy or --synthetic T,E");
    o.drop.seed = o.seed;
    if (o.capacity && (o.drop.reroute || o.fill || o.drop.policy == moe::drop_policy::score ||
                       o.drop.policy == moe::drop_policy::batch_prioritized))
        o.cfg.keep_scores = true;
    if (!o.mask_path.empty()) {
        // 1-D (or T x 1) mask of any numeric type; nonzero = a real token.
        moe::io::npy_array m;
        try {
            m = moe::io::read_npy(o.mask_path);
        } catch (const moe::error& e) {
            fail("moe.cli.value", std::string("--mask: ") + e.what());
        }
        const std::size_t n = m.size(), w = moe::io::detail::descr_size(m.descr);
        if (m.shape.size() > 2 || (m.shape.size() == 2 && m.shape[1] != 1))
            fail("moe.cli.value", "--mask: " + o.mask_path + " must be 1-D or T x 1, got " + moe::io::shape_string(m.shape));
        o.valid.resize(n);
        for (std::size_t t = 0; t < n; ++t) {
            bool nz = false;
            for (std::size_t b = 0; b < w; ++b) nz = nz || m.bytes[t * w + b] != 0;
            if (m.descr[1] == 'f' && w == 4) {
                float f;
                std::memcpy(&f, m.bytes.data() + t * 4, 4);
                nz = f != 0.0f;
            } else if (m.descr[1] == 'f' && w == 8) {
                double d;
                std::memcpy(&d, m.bytes.data() + t * 8, 8);
                nz = d != 0.0;
            }
            o.valid[t] = nz ? 1 : 0;
        }
    }
    return o;
}

/// Reads a JSON array of device ids, alone or as the "placement" member of an object.
std::vector<std::int32_t> read_placement(const std::string& path) {
    std::ifstream f(path);
    if (!f) fail("moe.cli.placement", "cannot open '" + path + "'");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::size_t begin = text.find('[');
    const std::size_t key = text.find("\"placement\"");
    if (key != std::string::npos) begin = text.find('[', key);
    const std::size_t end = begin == std::string::npos ? std::string::npos : text.find(']', begin);
    if (end == std::string::npos) fail("moe.cli.placement", path + ": expected a JSON array of device ids");
    std::vector<std::int32_t> out;
    std::string item;
    std::istringstream items(text.substr(begin + 1, end - begin - 1));
    while (std::getline(items, item, ',')) {
        const auto b = item.find_first_not_of(" \t\r\n"), e = item.find_last_not_of(" \t\r\n");
        if (b == std::string::npos) fail("moe.cli.placement", path + ": empty entry in the placement array");
        const std::string tok = item.substr(b, e - b + 1);
        std::size_t used = 0;
        long v = -1;
        try {
            v = std::stol(tok, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used != tok.size() || v < 0 || v > 1000000)
            fail("moe.cli.placement", path + ": '" + tok + "' is not a device id (a non-negative integer)");
        out.push_back(static_cast<std::int32_t>(v));
    }
    return out;
}

/// The router losses of a routing taken before any drop (clean logits for P).
struct loss_summary {
    double aux_megatron = 0, aux_hf = 0, aux_deepspeed = 0, z = 0, importance_load = 0;
    double seq_aux = 0, global_aux = 0, micro_mean_aux = 0;
    bool has_importance = false;
    double experts_per_token = 0;
};

loss_summary losses_of(const moe::matrix<float>& clean, const moe::matrix<float>& noisy, const moe::routing<float>& r,
                       const options& o) {
    loss_summary s;
    moe::aux_loss_config a;
    a.score = o.cfg.score == moe::score_function::sigmoid ? moe::score_function::sigmoid : moe::score_function::softmax;
    a.num_null_experts = o.null_experts;
    const moe::vector_view<std::uint8_t> valid(o.valid);
    s.aux_megatron = moe::load_balancing_loss(clean, r, a, valid);
    if (o.seq_len) s.seq_aux = moe::sequence_load_balancing_loss(clean, r, o.seq_len, a, valid);
    if (o.micro_batches) {
        const std::size_t T = clean.rows, M = o.micro_batches, k = r.top_k;
        if (M == 0 || T % M != 0) fail("moe.cli.value", "--micro-batches " + std::to_string(M) + " does not divide " + std::to_string(T) + " tokens");
        const std::size_t Tm = T / M;
        moe::global_load_balancer acc(a);
        for (std::size_t m = 0; m < M; ++m) {
            const moe::matrix_view<const float> lm(clean.values.data() + m * Tm * clean.cols, Tm, clean.cols);
            moe::routing<float> rm(Tm, r.num_experts, k, false);
            std::copy(r.indices.begin() + static_cast<std::ptrdiff_t>(m * Tm * k), r.indices.begin() + static_cast<std::ptrdiff_t>((m + 1) * Tm * k),
                      rm.indices.begin());
            std::copy(r.weights.begin() + static_cast<std::ptrdiff_t>(m * Tm * k), r.weights.begin() + static_cast<std::ptrdiff_t>((m + 1) * Tm * k),
                      rm.weights.begin());
            const moe::vector_view<std::uint8_t> vm = valid.empty() ? valid : moe::vector_view<std::uint8_t>(valid.data + m * Tm, Tm);
            acc.add(lm, rm, vm);
            s.micro_mean_aux += moe::load_balancing_loss(lm, rm, a, vm) / static_cast<double>(M);
        }
        s.global_aux = acc.loss();
    }
    a.variant = moe::aux_loss_variant::hf_mixtral;
    s.aux_hf = moe::load_balancing_loss(clean, r, a, valid);
    a.variant = moe::aux_loss_variant::deepspeed;
    s.aux_deepspeed = moe::load_balancing_loss(clean, r, a, valid);
    s.z = moe::z_loss(clean, 1.0, valid);
    bool every_token_routed = clean.cols >= 2;
    for (std::size_t t = 0; t < r.num_tokens && every_token_routed; ++t) every_token_routed = r.index(t, 0) >= 0;
    if (every_token_routed) {
        s.importance_load = moe::importance_load_loss(clean, noisy, r, o.noise == "normal" ? o.noise_scale : 1.0);
        s.has_importance = true;
    }
    return s;
}

/// The routing-policy simulator: every policy on the same logits, one table.
int compare(const options& o, const moe::matrix<float>& logits) {
    const std::size_t T = logits.rows, E = logits.cols, k = o.cfg.top_k;
    for (const auto& n : o.policies)
        if (std::find_if(std::begin(moe::simulator_policies), std::end(moe::simulator_policies),
                         [&](const char* p) { return n == p; }) == std::end(moe::simulator_policies))
            fail("moe.cli.value", "--compare: unknown policy '" + n + "' (see --help)");
    moe::simulator_options so;
    so.block = o.block;
    so.bias_steps = o.bias_steps;
    so.row_cost = moe::measure_row_cost(o.expert_h, o.expert_f);
    if (o.synthetic)  // aux-free-bias learns its bias on a stream of fresh batches
        so.bias_batch = [&](std::size_t step) { return moe::synthetic_logits(T, E, moe::skew::parse(o.skew), o.seed + 1000 + step); };
    std::printf("policy comparison: %zu tokens, %zu experts, k=%zu (%s); expert %zux%zu costs %.2f us per row here\n", T, E, k,
                moe::to_string(o.cfg.score), o.expert_h, o.expert_f, so.row_cost * 1e6);
    const std::vector<moe::policy_result> results = moe::compare_policies(logits, o.cfg, o.policies, so);
    std::printf("%-24s %7s %8s %8s %6s %8s %8s %7s %8s %9s %11s\n", "policy", "drop%", "rerouted", "max/mean", "CV",
                "padding%", "aux", "z-loss", "exp/tok", "us/token", "model ms");
    for (const auto& pr : results)
        std::printf("%-24s %7.2f %8zu %8.3f %6.3f %8.1f %8.4f %7.3f %8.3f %9.3f %6.2f (%.2f)\n", pr.name.c_str(),
                    100 * pr.drop_rate, pr.rerouted, pr.max_over_mean, pr.cv, 100 * pr.padding, pr.aux, pr.z,
                    pr.experts_per_token, pr.us_per_token, pr.model_ms, pr.ideal_ms);
    std::printf("model ms: the busiest expert's rows x the per-row cost, one expert per device (balanced: in brackets)\n");
    if (!o.csv.empty() || !o.plot.empty()) {
        const std::string table = !o.csv.empty() ? o.csv : o.plot + ".table.csv";
        std::ofstream f(table);
        f << "policy,drop_rate,rerouted,max_over_mean,cv,padding_fraction,aux_loss,z_loss,experts_per_token,us_per_token,"
             "model_ms,balanced_ms\n";
        for (const auto& pr : results)
            f << pr.name << ',' << pr.drop_rate << ',' << pr.rerouted << ',' << pr.max_over_mean << ',' << pr.cv << ','
              << pr.padding << ',' << pr.aux << ',' << pr.z << ',' << pr.experts_per_token << ',' << pr.us_per_token << ','
              << pr.model_ms << ',' << pr.ideal_ms << '\n';
        f.close();
        if (!f) fail("moe.cli.output", "failed writing " + table);
        if (!o.csv.empty()) std::printf("wrote %s\n", o.csv.c_str());
        if (!o.plot.empty()) {
            const std::string loads = o.plot + ".loads.csv";
            std::ofstream l(loads);
            l << "policy,expert,load\n";
            for (const auto& pr : results)
                for (std::size_t e = 0; e < pr.load.size(); ++e) l << pr.name << ',' << e << ',' << pr.load[e] << '\n';
            l.close();
            // Debian's interpreter first (python3-matplotlib lives there), then whatever is on PATH.
            const std::string python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
            std::fflush(stdout);
            const std::string cmd = python + " '" + std::string(MOE_EXAMPLES_DIR) + "/plot_policies.py' '" + table + "' '" +
                                    loads + "' '" + o.plot + "'";
            if (std::system(cmd.c_str()) != 0)
                fail("moe.cli.plot", "plotting failed (needs python3-matplotlib): " + cmd);
            std::printf("wrote %s\n", o.plot.c_str());
        }
    }
    return 0;
}

int run(const options& o) {
    const std::size_t extra = o.synthetic ? o.null_experts : 0;
    if (o.synthetic)  // logits, then the routing's scores and slots: fail with the bytes, not std::bad_alloc
        check_memory("--synthetic", 3.0 * static_cast<double>(o.synth_tokens) * static_cast<double>(o.synth_experts + extra) * sizeof(float));
    moe::matrix<float> logits =
        o.synthetic ? moe::synthetic_logits(o.synth_tokens, o.synth_experts + extra, moe::skew::parse(o.skew), o.seed)
                    : moe::io::read_npy_matrix<float>(o.logits_path);
    std::vector<float> bias;
    if (!o.bias_path.empty()) bias = moe::io::read_npy_matrix<float>(o.bias_path, true).values;
    if (!o.valid.empty() && o.valid.size() != logits.rows)
        fail("moe.cli.value", "--mask has " + std::to_string(o.valid.size()) + " values for " + std::to_string(logits.rows) + " tokens");
    if (o.null_experts >= logits.cols)
        fail("moe.cli.value", "--null-experts " + std::to_string(o.null_experts) + " leaves no real expert among " +
                                  std::to_string(logits.cols) + " logit columns");

    if (o.compare) return compare(o, logits);
    const moe::matrix<float> clean = logits;
    if (o.jitter > 0.0) moe::apply_jitter(logits.view(), o.jitter, o.seed + 1);
    if (o.noise == "gumbel") moe::add_gumbel_noise(logits.view(), o.seed + 2);
    if (o.noise == "normal")
        moe::add_normal_noise(logits.view(), o.noise_scale / static_cast<double>(logits.cols), o.seed + 2);

    const auto t0 = std::chrono::steady_clock::now();
    moe::routing<float> r;
    if (o.policy == "topk") {
        r = moe::route(logits, o.cfg, bias);
        if (o.noise == "gumbel") moe::rescore(r, clean, o.cfg);
    } else if (o.policy == "top-p") {
        moe::top_p_config c;
        c.p = o.policy_param;
        c.score = o.cfg.score;
        c.keep_scores = o.cfg.keep_scores;
        r = moe::route_top_p(logits, c);
    } else if (o.policy == "expert-choice") {
        moe::expert_choice_config c;
        c.capacity_factor = o.policy_param > 0 ? o.policy_param : static_cast<double>(o.cfg.top_k);
        c.score = o.cfg.score;
        c.keep_scores = o.cfg.keep_scores;
        r = moe::route_expert_choice(logits, c);
    } else {
        r = moe::route_sinkhorn(logits, o.cfg.top_k);
        if (o.cfg.keep_scores) r.scores = moe::route(logits, o.cfg).scores;  // for score-based drop / reroute
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!o.valid.empty()) moe::mask_tokens(r, o.valid);
    const loss_summary losses = losses_of(clean, logits, r, o);
    if (o.null_experts) r = moe::strip_null_experts(r, r.num_experts - o.null_experts);
    const double experts_per_token = moe::mean_experts_per_token(r);
    const std::size_t E_in = r.num_experts;
    const moe::load_metrics before = moe::measure(r);
    moe::capacity_report rep;
    moe::drop_config drop = o.drop;
    if (o.placement_devices) {  // contiguous: expert e on device e * D / E
        for (std::size_t e = 0; e < E_in; ++e)
            drop.placement.push_back(static_cast<std::int32_t>(e * o.placement_devices / E_in));
    }
    if (!o.placement_file.empty()) drop.placement = read_placement(o.placement_file);
    if (o.fixed_capacity) drop.per_expert.assign(E_in, o.fixed_capacity);
    // Placement is checked here too, so that it is validated without --reroute.
    const std::vector<std::size_t> device_load =
        drop.placement.empty() ? std::vector<std::size_t>{} : moe::device_loads(r, drop.placement);
    if (o.capacity) rep = moe::apply_capacity(r, drop);
    // Drops are measured right after the capacity step; loads and padding on the final routing.
    const moe::load_metrics after_capacity = moe::measure(r, o.capacity ? &rep : nullptr);
    moe::fill_in_report fill;
    if (o.fill) r = moe::fill_in(r, rep.capacity, &fill);
    const moe::dispatch_plan plan =
        moe::make_plan(r, o.block, o.pad_to_capacity ? moe::padded_rows_per_expert(rep.capacity, r.num_tokens) : 0);
    moe::load_metrics m = moe::measure(r, nullptr, &plan);
    m.dropped = after_capacity.dropped;
    m.drop_rate = after_capacity.drop_rate;
    m.drops_by_decile = after_capacity.drops_by_decile;

    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    const std::vector<std::size_t>& load = m.load;
    const std::size_t max_load = m.max_load;
    const double straggler = m.max_over_mean;

    if (!o.out_dir.empty()) {
        ::mkdir(o.out_dir.c_str(), 0755);
        moe::io::write_npy(o.out_dir + "/indices.npy", r.indices.data(), {T, k});
        moe::io::write_npy(o.out_dir + "/weights.npy", r.weights.data(), {T, k});
        const std::vector<std::int64_t> load64(load.begin(), load.end());
        moe::io::write_npy(o.out_dir + "/tokens_per_expert.npy", load64.data(), {E});
        std::ofstream js(o.out_dir + "/summary.json");
        js << "{\n  \"tokens\": " << T << ",\n  \"experts\": " << E << ",\n  \"top_k\": " << k
           << ",\n  \"score\": \"" << moe::to_string(o.cfg.score) << "\",\n  \"tokens_per_expert\": [";
        for (std::size_t e = 0; e < E; ++e) js << (e ? ", " : "") << load[e];
        js << "],\n  \"max_load\": " << max_load << ",\n  \"mean_load\": " << m.mean_load
           << ",\n  \"max_over_mean\": " << straggler << ",\n  \"max_over_mean_before_capacity\": "
           << before.max_over_mean << ",\n  \"cv\": " << m.cv;
        if (o.capacity) {
            js << ",\n  \"capacity\": " << rep.capacity << ",\n  \"dropped\": " << m.dropped
               << ",\n  \"drop_rate\": " << m.drop_rate << ",\n  \"drops_by_decile\": [";
            for (std::size_t i = 0; i < 10; ++i) js << (i ? ", " : "") << m.drops_by_decile[i];
            js << "],\n  \"rerouted\": " << rep.rerouted.size() << ",\n  \"reroute_rounds\": " << rep.reroute_rounds
               << ",\n  \"filled\": " << fill.filled;
        }
        if (!drop.placement.empty()) {
            const auto dl = moe::device_loads(r, drop.placement);
            js << ",\n  \"device_loads_before_capacity\": [";
            for (std::size_t d = 0; d < device_load.size(); ++d) js << (d ? ", " : "") << device_load[d];
            js << "],\n  \"device_loads\": [";
            for (std::size_t d = 0; d < dl.size(); ++d) js << (d ? ", " : "") << dl[d];
            js << "]";
        }
        js << ",\n  \"policy\": \"" << o.policy << "\",\n  \"mean_experts_per_token\": " << experts_per_token
           << ",\n  \"aux_loss\": {\"megatron\": " << losses.aux_megatron << ", \"hf_mixtral\": " << losses.aux_hf
           << ", \"deepspeed\": " << losses.aux_deepspeed << "},\n  \"z_loss\": " << losses.z;
        if (losses.has_importance) js << ",\n  \"importance_load_loss\": " << losses.importance_load;
        js << ",\n  \"padding_fraction\": " << m.padding_fraction << "\n}\n";
        if (!js) fail("moe.cli.output", "failed writing " + o.out_dir + "/summary.json");
        std::printf("wrote %s/indices.npy, weights.npy, summary.json\n", o.out_dir.c_str());
        return 0;
    }

    const bool softmax = o.cfg.score == moe::score_function::softmax;
    std::printf("routed %zu tokens to %zu experts, k=%zu (%s%s, renorm=%s, scale=%g", T, E, o.cfg.top_k,
                moe::to_string(o.cfg.score), softmax ? (o.cfg.pre_softmax ? ", pre-softmax" : ", post-softmax") : "",
                moe::to_string(o.cfg.renorm), static_cast<double>(o.cfg.scaling_factor));
    if (o.cfg.grouped()) std::printf(", groups %zu/%zu", o.cfg.group_top_k, o.cfg.num_groups);
    std::printf(") in %.3f ms (%.1f ns/token)\n", seconds * 1e3, T ? seconds * 1e9 / static_cast<double>(T) : 0.0);
    if (o.policy != "topk" || o.null_experts)
        std::printf("policy %s%s: %.3f experts per token\n", o.policy.c_str(),
                    o.null_experts ? (" with " + std::to_string(o.null_experts) + " null experts").c_str() : "",
                    experts_per_token);
    std::printf("losses: aux %.6g (Megatron), %.6g (HF Mixtral), %.6g (DeepSpeed); z-loss %.6g", losses.aux_megatron,
                losses.aux_hf, losses.aux_deepspeed, losses.z);
    if (losses.has_importance) std::printf("; importance+load %.6g", losses.importance_load);
    if (o.seq_len) std::printf("; sequence aux %.6g (seq_len %zu)", losses.seq_aux, o.seq_len);
    if (o.micro_batches)
        std::printf("; global-batch aux %.6g over %zu micro-batches (their own mean %.6g)", losses.global_aux, o.micro_batches,
                    losses.micro_mean_aux);
    if (!o.valid.empty()) {
        std::size_t n = 0;
        for (auto v : o.valid) n += v != 0;
        std::printf("; %zu of %zu tokens unmasked", n, o.valid.size());
    }
    std::printf("\n");
    if (o.capacity)
        std::printf("capacity %zu (%s, %s): dropped %zu of %zu slots (%.2f%%); max/mean load %.3f -> %.3f\n",
                    rep.capacity,
                    o.fixed_capacity ? "explicit"
                                     : (std::string(moe::to_string(o.drop.capacity.formula)) + ", factor " +
                                        moe::detail::concat(o.drop.capacity.factor)).c_str(),
                    moe::to_string(o.drop.policy), m.dropped, after_capacity.dropped + after_capacity.routed,
                    100.0 * m.drop_rate, before.max_over_mean, after_capacity.max_over_mean);
    if (o.capacity && drop.reroute)
        std::printf("rerouted %zu slots in %zu rounds%s\n", rep.rerouted.size(), rep.reroute_rounds,
                    drop.placement.empty() ? "" : " (within each expert's device)");
    if (o.fill) std::printf("fill-in added %zu (token, expert) pairs; up to %zu experts per token\n", fill.filled, k);
    (void)T;
    if (o.block > 1 || o.pad_to_capacity)
        std::printf("padding: %.1f%% of %zu rows%s\n", 100.0 * m.padding_fraction, plan.num_rows(),
                    o.pad_to_capacity ? " (pad-to-capacity)" : "");
    if (!drop.placement.empty()) {
        const auto dl = moe::device_loads(r, drop.placement);
        std::printf("slots per device:");
        for (std::size_t d = 0; d < dl.size(); ++d)
            std::printf(" %zu%s", dl[d], d < device_load.size() && device_load[d] != dl[d]
                                                 ? (" (was " + std::to_string(device_load[d]) + ")").c_str() : "");
        std::printf("\n");
    }
    std::printf("tokens per expert (max/mean load %.3f, CV %.3f):\n", straggler, m.cv);
    const std::size_t shown = std::min<std::size_t>(E, 32);
    for (std::size_t e = 0; e < shown; ++e) {
        const int bar = max_load ? static_cast<int>(40.0 * static_cast<double>(load[e]) / static_cast<double>(max_load) + 0.5) : 0;
        std::printf("  expert %3zu %7zu %s\n", e, load[e], std::string(static_cast<std::size_t>(bar), '#').c_str());
    }
    if (shown < E) std::printf("  ... %zu more experts (use --out for all)\n", E - shown);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--trace" || a == "--loads" || a == "--synthetic-trace") return route_trace_main(argc, argv);
    }
    const options o = parse(argc, argv);
    try {
        return run(o);
    } catch (const moe::error& e) {
        std::fprintf(stderr, "moe-route: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "moe-route: [moe.cli.error] %s\n", e.what());
        return 2;
    }
}
