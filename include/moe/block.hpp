/// @file block.hpp
/// The MoE block: one class for every model family, weight format and capacity switch.
///
///     logits = x Wr^T (+ br)                            gate: router linear, optional bias (GPT-OSS)
///     routing = route(logits, recipe, selection bias)   route: e_score_correction_bias (DeepSeek-V3 ...)
///     [capacity, drop, reroute, fill-in]                capacity: layer_options (all off: dropless)
///     plan = make_plan(routing)                         plan: token rows grouped by expert
///     rows = FFN_e(x[t]) for each planned row           experts: any weight format
///     routed[t] = sum_s w(t,s) * rows(t,s)              combine: output weighting (most families)
///              or sum_s FFN_e(w(t,s) * x[t])            input weighting (Llama-4)
///     FFN_e(x) = act(x W1^T + b1, x W3^T + b3) W2^T + b2    SwiGLU or GPT-OSS's clamped variant
///     y[t] = routed[t] + g_t * SharedFFN(x[t])          g_t = 1, or sigmoid(x[t] . w_g) (Qwen2-MoE)
///     (+ sum of w(t,s) * x[t] over slots on identity experts, LongCat-Flash's zero-computation experts)
///
/// The stages are the small functions of `moe::stages`, which the expert-parallel block
/// (mpi/expert_parallel.hpp) calls around its exchange, so both run the same code and the same
/// weight formats. Packed once at construction; scratch reused across calls (no allocation per
/// call once the largest batch was seen, except in the optional capacity stage); threads from the
/// caller's executor. Deterministic: the same bits for any executor and thread count, and across
/// archs as the kernels are.
///
/// `moe::sparse_moe_block` (layer.hpp) and `moe::models::moe_block` (models/moe_block.hpp) are
/// aliases of `moe::block` kept for one release.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "capacity.hpp"
#include "dispatch.hpp"
#include "executor.hpp"
#include "gate.hpp"
#include "kernels/expert_ffn.hpp"
#include "kernels/expert_set.hpp"
#include "kernels/formats.hpp"
#include "kernels/quant_ffn.hpp"
#include "expert_reduction.hpp"
#include "replay.hpp"
#include "route_policies.hpp"
#include "router.hpp"
#include "tensor.hpp"

namespace moe {

/// What the block does besides routing: capacity-aware inference switches (all off: dropless),
/// packing and the quantized formats' parameters.
struct layer_options {
    /// Softmax over all experts, top-2, renormalised (`presets::by_name` names the families'
    /// recipes); replaced by the spec's recipe where a block_spec is given.
    router_config router = [] {
        router_config c;
        c.renorm = renormalize::sum;
        return c;
    }();
    bool capacity = false;  ///< apply `drop` (capacity, policy, reroute) after routing
    drop_config drop;
    bool fill_in = false;   ///< Rectify-Router fill-in after the drop (needs capacity)
    kernels::pack_options packing;
    kernels::formats::format_params format;  ///< quantized weights: int4's group and zero points
    /// Blocks of weight type `kernels::per_expert`: the format of each routed expert ("q8_0",
    /// "q4_k", "int4:128", "f32", ...; `kernels::weight_format_names`), or one name for all.
    /// Empty: f32. Consecutive or not, experts of one name share a group.
    std::vector<std::string> expert_formats;
    /// Route fewer experts than the recipe: 0 = the recipe's k (expert_reduction.hpp).
    std::size_t top_k = 0;
    /// Smart expert reduction after routing (k_min = 0: off; expert_reduction.hpp).
    ser_config ser;
};

/// How the shared expert's output is scaled: always on, or by sigmoid(x . w_gate) (Qwen2-MoE's
/// `shared_expert_gate`).
enum class shared_gate { none, sigmoid };

/// A model family's MoE block: its router recipe and structure. Sizes: E experts, hidden H,
/// expert ffn F, shared expert ffn Fs (the total of DeepSeek's n_shared_experts; 0 = none).
struct block_spec {
    std::string family;  ///< the HF model_type or GGUF architecture it was loaded from (informational)
    router_config router;
    std::size_t num_experts = 0, hidden = 0, ffn = 0, shared_ffn = 0;
    kernels::ffn_activation activation = kernels::ffn_activation::swiglu;
    float swiglu_alpha = 1.702f, swiglu_limit = 7.0f;  ///< swiglu_oai (GPT-OSS); swiglu_clamp (DeepSeek-V4) uses the limit
    bool router_bias = false;      ///< the router linear has a bias (GPT-OSS)
    bool selection_bias = false;   ///< e_score_correction_bias: added for selection only
    bool expert_bias = false;      ///< b1, b3 [E x F] and b2 [E x H] (GPT-OSS)
    bool weight_on_input = false;  ///< the routing weight scales the expert's input (Llama-4)
    shared_gate shared = shared_gate::none;
    /// Zero-computation (identity) experts after the E real ones (LongCat-Flash): the router
    /// scores E + zero_experts experts; a slot on one of them adds weight * x to the output and
    /// computes nothing.
    std::size_t zero_experts = 0;

    /// Experts the router scores: the real ones and the identity ones.
    [[nodiscard]] std::size_t routed_experts() const noexcept { return num_experts + zero_experts; }

    /// Throws [moe.models.spec] for inconsistent settings and the router's own errors.
    void validate() const {
        if (num_experts == 0 || hidden == 0 || ffn == 0)
            MOE_THROW("moe.models.spec", family, ": num_experts, hidden and ffn must be positive (", num_experts, ", ", hidden, ", ",
                      ffn, ")");
        if (shared == shared_gate::sigmoid && shared_ffn == 0)
            MOE_THROW("moe.models.spec", family, ": a shared-expert gate without a shared expert");
        if (zero_experts > 0 && weight_on_input)
            MOE_THROW("moe.models.spec", family, ": identity experts with input weighting");
        router.validate(routed_experts());
    }
};

/// Float32 weights of one block in the HF layouts (row-major): router_w [R x H] (R = E plus the
/// identity experts); w1 (gate), w3 (up) [E x F x H]; w2 (down) [E x H x F]; the optional ones
/// empty when the spec has none: router_b [R], selection_bias [R], b1 / b3 [E x F], b2 [E x H],
/// shared s1 / s3 [Fs x H], s2 [H x Fs], s_gate [H].
struct block_weights {
    std::vector<float> router_w, router_b, selection_bias;
    std::vector<float> w1, w3, w2, b1, b3, b2;
    std::vector<float> s1, s3, s2, s_gate;

    /// Throws [moe.models.weights] "<family>: <name> has N values, the block needs M" for any
    /// size mismatch; `experts` false skips the routed expert matrices (packed elsewhere),
    /// `rest` false everything but the router (a routing-only load).
    void check(const block_spec& s, bool experts = true, bool rest = true) const {
        const std::size_t E = s.num_experts, R = s.routed_experts(), H = s.hidden, F = s.ffn, Fs = s.shared_ffn;
        auto need = [&](const std::vector<float>& v, const char* name, std::size_t n) {
            if (v.size() != n) MOE_THROW("moe.models.weights", s.family, ": ", name, " has ", v.size(), " values, the block needs ", n);
        };
        need(router_w, "router_w", R * H);
        need(router_b, "router_b", s.router_bias ? R : 0);
        need(selection_bias, "selection_bias", s.selection_bias ? R : 0);
        if (experts) {
            need(w1, "w1", E * F * H);
            need(w3, "w3", E * F * H);
            need(w2, "w2", E * H * F);
        }
        if (!rest) return;
        need(b1, "b1", s.expert_bias ? E * F : 0);
        need(b3, "b3", s.expert_bias ? E * F : 0);
        need(b2, "b2", s.expert_bias ? E * H : 0);
        need(s1, "s1", Fs * H);
        need(s3, "s3", Fs * H);
        need(s2, "s2", H * Fs);
        need(s_gate, "s_gate", s.shared == shared_gate::sigmoid ? H : 0);
    }
};

/// The stages of a block, each a small function over caller-owned state; `moe::block` runs them
/// in order and `mpi::expert_parallel_block` runs them around its exchange.
namespace stages {

/// The option fix-up of every block: the router is validated for E experts; scores are kept where
/// the capacity stage ranks or reroutes by them; fill-in needs capacity. Throws the router's
/// errors and [moe.layer.options].
inline void fix_options(layer_options& o, std::size_t num_experts) {
    if (o.top_k) o.router = with_top_k(o.router, o.top_k);
    o.router.validate(num_experts);
    if (o.ser.active()) o.ser.validate(o.router.top_k);
    if (o.capacity && (o.drop.reroute || o.fill_in || o.drop.policy == drop_policy::score ||
                       o.drop.policy == drop_policy::batch_prioritized))
        o.router.keep_scores = true;
    if (o.fill_in && !o.capacity) MOE_THROW("moe.layer.options", "fill_in needs capacity: set layer_options::capacity");
}

/// Gate and route: logits (T x E, reusing `logits`' storage) = x Wr^T + router_bias, then `r` =
/// the routing of those logits (reshaped in place: its vectors keep their capacity).
template <class Arch, class Executor>
void gate_route(routing<float>& r, std::vector<float>& logits, matrix_view<const float> x, const packed_gate& gate,
                vector_view<float> router_bias, const router_config& cfg, vector_view<float> selection_bias,
                router_workspace<float>& ws, Executor&& exec) {
    const std::size_t T = x.rows, E = gate.num_experts, k = cfg.top_k;
    if (logits.size() < T * E) logits.resize(T * E);
    const matrix_view<float> l(logits.data(), T, E);
    gate_into<Arch>(l, x, gate, router_bias, exec);
    r.num_tokens = T;
    r.num_experts = E;
    r.top_k = k;
    r.indices.resize(T * k);
    r.weights.resize(T * k);
    r.scores.resize(cfg.keep_scores ? T * E : 0);
    route_into<Arch>(r, matrix_view<const float>(l), cfg, selection_bias, ws, exec);
}

/// Gate and replay: logits as gate_route, then `r` = the replay of `indices` (T x k) with
/// `weights` (or, empty, the weights recomputed from the scores; replay.hpp).
template <class Arch, class Executor>
void gate_replay(routing<float>& r, std::vector<float>& logits, matrix_view<const float> x, const packed_gate& gate,
                 vector_view<float> router_bias, const router_config& cfg, matrix_view<const std::int32_t> indices,
                 matrix_view<const float> weights, replay_workspace<float>& ws, Executor&& exec) {
    const std::size_t T = x.rows, E = gate.num_experts, k = cfg.top_k;
    detail::check_replay(indices, weights, T, E, k);
    if (logits.size() < T * E) logits.resize(T * E);
    const matrix_view<float> l(logits.data(), T, E);
    gate_into<Arch>(l, x, gate, router_bias, exec);
    r.num_tokens = T;
    r.num_experts = E;
    r.top_k = k;
    r.indices.resize(T * k);
    r.weights.resize(T * k);
    r.scores.resize(cfg.keep_scores ? T * E : 0);
    replay_into<Arch>(r, matrix_view<const float>(l), cfg, indices, weights, ws, exec);
}

/// Expert reduction after routing: with `o.ser` active, drops the slots SER drops and reweighs
/// the rest from `logits` (T x E, the router's). Returns the slots dropped.
template <class Arch, class Executor>
std::size_t reduce(routing<float>& r, const std::vector<float>& logits, const layer_options& o, replay_workspace<float>& ws,
                   Executor&& exec) {
    if (!o.ser.active()) return 0;
    return reduce_experts<Arch>(r, matrix_view<const float>(logits.data(), r.num_tokens, r.num_experts), o.router, o.ser, ws, exec);
}

/// Capacity: with `o.capacity`, the drop (capacity, policy, reroute) and, with `o.fill_in`, the
/// Rectify-Router fill-in; the reports are reset either way.
inline void capacity(routing<float>& r, const layer_options& o, capacity_report& report, fill_in_report& fill) {
    report = capacity_report{};
    fill = fill_in_report{};
    if (!o.capacity) return;
    report = apply_capacity(r, o.drop);
    if (o.fill_in) r = fill_in(r, report.capacity, &fill);
}

/// Experts in weight type W: float types (float, Eigen::bfloat16, Eigen::half) run `expert_ffn`;
/// format types (kernels::formats::q4_k, int8, mxfp4, ...) run `quant_expert_ffn` and are made
/// from float weights (the format's reference quantizer) or from bytes already in the format.
template <class Arch, class W, bool Float = kernels::is_weight_type_v<W>>
struct experts {
    using packed = kernels::packed_experts<Arch, W>;
    using source = W;  ///< the element type the constructors take
    /// w1, w3: E x F x H; w2: E x H x F (HF layout).
    static packed pack(const W* w1, const W* w3, const W* w2, std::size_t E, std::size_t H, std::size_t F, const layer_options& o) {
        return kernels::pack_experts<Arch>(w1, w3, w2, E, H, F, o.packing);
    }
    /// rows (plan rows x H) = each planned row's expert applied to its token of x.
    template <class Executor>
    static void run(matrix_view<float> rows, matrix_view<const float> x, const dispatch_plan& plan, const packed& pw,
                    kernels::ffn_workspace& ws, Executor&& exec, const kernels::ffn_extras& extras = {}) {
        ws.reserve(kernels::workspace_size(plan, pw).total());
        kernels::expert_ffn(rows, x, plan, pw, ws.data(), ws.size(), exec, kernels::ffn_tiling{}, extras);
    }
};
template <class Arch, class W>
struct experts<Arch, W, false> {
    using packed = kernels::packed_quant_experts<W>;
    using source = float;
    static packed pack(const float* w1, const float* w3, const float* w2, std::size_t E, std::size_t H, std::size_t F,
                       const layer_options& o) {
        return kernels::pack_quant_experts<W>(kernels::quantize_experts<W>(w1, w3, w2, E, H, F, o.format), H, F, o.packing);
    }
    template <class Executor>
    static void run(matrix_view<float> rows, matrix_view<const float> x, const dispatch_plan& plan, const packed& pw,
                    kernels::ffn_workspace& ws, Executor&& exec, const kernels::ffn_extras& extras = {}) {
        ws.reserve(kernels::workspace_size(plan, pw).total());
        kernels::quant_expert_ffn<Arch>(rows, x, plan, pw, ws.data(), ws.size(), exec, extras);
    }
};

/// Experts in per-expert formats (kernels/expert_set.hpp): from float weights, each expert
/// converted to its entry of `o.expert_formats`.
template <class Arch>
struct experts<Arch, kernels::per_expert, false> {
    using packed = kernels::expert_set<Arch>;
    using source = float;
    static packed pack(const float* w1, const float* w3, const float* w2, std::size_t E, std::size_t H, std::size_t F,
                       const layer_options& o) {
        const auto& names = o.expert_formats;
        if (names.size() > 1 && names.size() != E)
            MOE_THROW("moe.layer.options", "expert_formats has ", names.size(), " names for ", E, " experts (give one, or one per expert)");
        const std::vector<std::string> all = names.size() == E ? names : std::vector<std::string>(E, names.empty() ? "f32" : names[0]);
        return kernels::make_expert_set<kernels::weight_formats, Arch>(all, E, H, F, w1, w3, w2, o.packing);
    }
    template <class Executor>
    static void run(matrix_view<float> rows, matrix_view<const float> x, const dispatch_plan& plan, const packed& pw,
                    kernels::ffn_workspace& ws, Executor&& exec, const kernels::ffn_extras& extras = {}) {
        pw.run(rows, x, plan, ws, exec, extras);
    }
};

}  // namespace stages

/// The MoE block. @tparam W the routed experts' weight type: float, Eigen::bfloat16, Eigen::half,
/// a quantized format of kernels/formats/ (kernels::formats::q4_k, int8, mxfp4, ...), or
/// `kernels::per_expert` (each expert in a format chosen at run time), each with the family's
/// biases and SwiGLU variant.
template <class Arch = default_arch, class W = float>
class block {
    using experts_t = stages::experts<Arch, W>;

public:
    using source_type = typename experts_t::source;  ///< W for float formats, float for quantized ones
    using packed_type = typename experts_t::packed;

    /// A family's block: packs `w` (float experts converted to W, or quantized with the format's
    /// reference quantizer). `o` gives the capacity switches and packing; its router is replaced by
    /// the spec's. Throws [moe.models.spec], [moe.models.weights].
    block(block_spec spec, const block_weights& w, const layer_options& o = {}) : block(spec, w, pack_routed(spec, w, o), o) {}

    /// With routed experts packed by the caller (e.g. from a checkpoint's quantized bytes);
    /// `w`'s expert matrices may then be empty.
    block(block_spec spec, const block_weights& w, packed_type experts, const layer_options& o = {})
        : spec_(std::move(spec)), opt_(o), experts_(std::move(experts)) {
        spec_.validate();
        w.check(spec_, /*experts=*/false);
        if (experts_.num_experts() != spec_.num_experts || experts_.hidden() != spec_.hidden || experts_.ffn() != spec_.ffn)
            MOE_THROW("moe.models.weights", spec_.family, ": packed experts are ", experts_.num_experts(), " x ", experts_.hidden(),
                      " x ", experts_.ffn(), ", the block needs ", spec_.num_experts, " x ", spec_.hidden, " x ", spec_.ffn);
        if constexpr (std::is_same<W, kernels::per_expert>::value) experts_.validate();
        init(w);
    }

    /// A Mixtral-structured block (plain SwiGLU experts, no biases, no shared expert) routed by
    /// `o.router`: router_w E x H (row-major); w1, w3: E x F x H; w2: E x H x F (HF layout).
    /// Quantized formats take float weights and quantize them with the format's reference
    /// quantizer (`o.format` gives int4's group).
    block(matrix_view<const float> router_w, const source_type* w1, const source_type* w3, const source_type* w2, std::size_t ffn,
          const layer_options& o = {})
        : block(router_w, experts_t::pack(w1, w3, w2, router_w.rows, router_w.cols, ffn, o), o) {}

    /// Quantized formats: a Mixtral-structured block from weights already in the format.
    template <class Q = W, class = std::enable_if_t<!kernels::is_weight_type_v<Q>>>
    block(matrix_view<const float> router_w, const kernels::quantized_experts<Q>& q, std::size_t ffn, const layer_options& o = {})
        : block(router_w, kernels::pack_quant_experts<Q>(q, router_w.cols, ffn, o.packing), o) {}

    /// A Mixtral-structured block from packed experts (E and H must match the router).
    block(matrix_view<const float> router_w, packed_type experts, const layer_options& o)
        : spec_(plain_spec(router_w, experts, o)), opt_(o), experts_(std::move(experts)) {
        block_weights w;
        w.router_w.assign(router_w.data, router_w.data + router_w.rows * router_w.cols);
        init(w);
    }

    /// y (T x H) = the block applied to x (T x H).
    template <class Executor = serial_executor>
    void forward(matrix_view<float> y, matrix_view<const float> x, Executor&& exec = {}) {
        check_shapes(y, x);
        stages::gate_route<Arch>(r_, logits_, x, gate_, vector_view<float>(router_b_), opt_.router, vector_view<float>(sel_bias_),
                                 router_ws_, exec);
        stages::reduce<Arch>(r_, logits_, opt_, replay_ws_, exec);
        experts_stage(y, x, exec);
    }

    /// y = the block applied to x with the routing replayed: token t's experts are row t of
    /// `indices` (T x k, k = the router's; -1 = an empty slot), weighed by `weights` (T x k) or,
    /// where `weights` is empty, by the router's scores at those experts (replay.hpp). Capacity
    /// and the rest of the block run as in forward; SER does not (the routing is given).
    /// Throws [moe.replay.shape], [moe.replay.index], [moe.replay.weights].
    template <class Executor = serial_executor>
    void forward_replay(matrix_view<float> y, matrix_view<const float> x, matrix_view<const std::int32_t> indices,
                 matrix_view<const float> weights = {}, Executor&& exec = {}) {
        check_shapes(y, x);
        stages::gate_replay<Arch>(r_, logits_, x, gate_, vector_view<float>(router_b_), opt_.router, indices, weights, replay_ws_,
                                  exec);
        experts_stage(y, x, exec);
    }

    /// Routes fewer experts from the next forward on, without repacking: `top_k` (0 = the
    /// recipe's k) and smart expert reduction `ser` (k_min = 0: off).
    /// Throws [moe.router.top_k] and [moe.selection.ser].
    void set_reduction(std::size_t top_k, ser_config ser = {}) {
        layer_options o = opt_;
        o.router = spec_.router;
        o.top_k = top_k;
        o.ser = ser;
        stages::fix_options(o, spec_.routed_experts());
        opt_ = std::move(o);
    }

    [[nodiscard]] const block_spec& spec() const noexcept { return spec_; }
    [[nodiscard]] const layer_options& options() const noexcept { return opt_; }
    [[nodiscard]] std::size_t num_experts() const noexcept { return spec_.num_experts; }
    [[nodiscard]] std::size_t hidden() const noexcept { return spec_.hidden; }
    [[nodiscard]] std::size_t ffn() const noexcept { return spec_.ffn; }
    /// What the last forward did: router logits (T x E, with the router bias), the final routing,
    /// the capacity stage's report, fill-in, and the dispatch plan.
    [[nodiscard]] matrix_view<const float> last_logits() const noexcept { return {logits_.data(), r_.num_tokens, spec_.routed_experts()}; }
    [[nodiscard]] const routing<float>& last_routing() const noexcept { return r_; }
    [[nodiscard]] const capacity_report& last_capacity() const noexcept { return report_; }
    [[nodiscard]] const fill_in_report& last_fill_in() const noexcept { return fill_; }
    [[nodiscard]] const dispatch_plan& last_plan() const noexcept { return plan_; }
    /// FLOPs of the last forward's routed expert products (6 H F per routed row) and its gate
    /// (2 H E per token); the shared expert is not counted.
    [[nodiscard]] double last_flops() const noexcept {
        std::size_t routed = 0;
        for (auto c : plan_.counts) routed += static_cast<std::size_t>(c);
        return 6.0 * static_cast<double>(routed) * static_cast<double>(spec_.hidden * spec_.ffn) +
               2.0 * static_cast<double>(r_.num_tokens * spec_.hidden * spec_.routed_experts());
    }
    /// The packed routed expert weights.
    [[nodiscard]] const packed_type& packed_experts() const noexcept { return experts_; }
    /// Bytes of packed weights per expert (what a decode step streams per active expert).
    [[nodiscard]] std::size_t expert_bytes() const noexcept { return experts_.expert_bytes(); }

private:
    void check_shapes(matrix_view<float> y, matrix_view<const float> x) const {
        const std::size_t H = spec_.hidden;
        if (x.cols != H || y.cols != H || y.rows != x.rows)
            MOE_THROW("moe.layer.shape", "x is ", x.rows, " x ", x.cols, ", y ", y.rows, " x ", y.cols, "; hidden=", H);
    }

    template <class Executor>
    void experts_stage(matrix_view<float> y, matrix_view<const float> x, Executor&& exec) {
        const std::size_t H = spec_.hidden;
        stages::capacity(r_, opt_, report_, fill_);
        if (spec_.zero_experts > 0) {
            identity_experts(y, x, exec);
        } else if (!spec_.weight_on_input) {
            make_plan_into(plan_, r_);
            run_routed(x, exec);
            combine<Arch>(y, matrix_view<const float>(rows_.data(), plan_.num_rows(), H), plan_, r_, exec);
        } else {
            weighted_inputs(y, x, exec);
        }
        if (spec_.shared_ffn > 0) add_shared(y, x, exec);
    }

    static block_spec plain_spec(matrix_view<const float> router_w, const packed_type& experts, const layer_options& o) {
        if (experts.num_experts() != router_w.rows || experts.hidden() != router_w.cols)
            MOE_THROW("moe.layer.shape", "router is ", router_w.rows, " x ", router_w.cols, ", experts ", experts.num_experts(),
                      " x hidden ", experts.hidden());
        block_spec s;
        s.family = "block";
        s.router = o.router;
        s.num_experts = router_w.rows;
        s.hidden = router_w.cols;
        s.ffn = experts.ffn();
        return s;
    }

    static packed_type pack_routed(const block_spec& s, const block_weights& w, const layer_options& o) {
        s.validate();
        w.check(s);
        if constexpr (kernels::is_weight_type_v<W> && !std::is_same<W, float>::value) {
            // float checkpoint values -> W (bf16 / f16 round to nearest even, as torch's .to()).
            std::vector<W> c1(w.w1.begin(), w.w1.end()), c3(w.w3.begin(), w.w3.end()), c2(w.w2.begin(), w.w2.end());
            return experts_t::pack(c1.data(), c3.data(), c2.data(), s.num_experts, s.hidden, s.ffn, o);
        } else {
            return experts_t::pack(w.w1.data(), w.w3.data(), w.w2.data(), s.num_experts, s.hidden, s.ffn, o);
        }
    }

    void init(const block_weights& w) {
        const std::size_t H = spec_.hidden, Fs = spec_.shared_ffn;
        opt_.router = spec_.router;
        stages::fix_options(opt_, spec_.routed_experts());
        gate_ = pack_gate<Arch>(matrix_view<const float>(w.router_w.data(), spec_.routed_experts(), H));
        router_b_ = w.router_b;
        sel_bias_ = w.selection_bias;
        b1_ = w.b1;
        b3_ = w.b3;
        b2_ = w.b2;
        if (Fs > 0) {
            shared_ = kernels::pack_experts<Arch>(w.s1.data(), w.s3.data(), w.s2.data(), 1, H, Fs, opt_.packing);
            if (spec_.shared == shared_gate::sigmoid) shared_gate_ = pack_gate<Arch>(matrix_view<const float>(w.s_gate.data(), 1, H));
        }
    }

    template <class Executor>
    void run_routed(matrix_view<const float> xin, Executor&& exec) {
        const std::size_t H = spec_.hidden;
        grow(rows_, plan_.num_rows() * H);
        kernels::ffn_extras extras;  // made per call: the block may have been copied or moved
        extras.activation = spec_.activation;
        extras.alpha = spec_.swiglu_alpha;
        extras.limit = spec_.swiglu_limit;
        extras.b1 = b1_.empty() ? nullptr : b1_.data();
        extras.b3 = b3_.empty() ? nullptr : b3_.data();
        extras.b2 = b2_.empty() ? nullptr : b2_.data();
        experts_t::run(matrix_view<float>(rows_.data(), plan_.num_rows(), H), xin, plan_, experts_, ws_, exec, extras);
    }

    /// Identity experts: the slots on experts >= E leave a copy of the routing (adding w * x to
    /// y_zero); the rest run as usual; y = combine + y_zero.
    template <class Executor>
    void identity_experts(matrix_view<float> y, matrix_view<const float> x, Executor&& exec) {
        const std::size_t T = x.rows, H = spec_.hidden;
        real_.num_tokens = T;
        real_.num_experts = spec_.routed_experts();
        real_.top_k = r_.top_k;
        real_.indices.assign(r_.indices.begin(), r_.indices.end());
        real_.weights.assign(r_.weights.begin(), r_.weights.end());
        real_.scores.clear();
        grow(yzero_, T * H);
        const matrix_view<float> yz(yzero_.data(), T, H);
        split_zero_experts(real_, spec_.num_experts, zero_expert_type::identity, x, yz);
        real_.num_experts = spec_.num_experts;
        make_plan_into(plan_, real_);
        run_routed(x, exec);
        combine<Arch>(y, matrix_view<const float>(rows_.data(), plan_.num_rows(), H), plan_, real_, exec);
        for (std::size_t t = 0; t < T; ++t) {
            float* yt = y.row(t);
            const float* zt = yz.row(t);
            for (std::size_t h = 0; h < H; ++h) yt[h] += zt[h];
        }
    }

    /// Input weighting: each slot (t, s) is a virtual token w(t, s) * x[t] routed with weight 1;
    /// the slot outputs add up per token in slot order.
    template <class Executor>
    void weighted_inputs(matrix_view<float> y, matrix_view<const float> x, Executor&& exec) {
        const std::size_t T = x.rows, E = spec_.num_experts, H = spec_.hidden, k = r_.top_k;
        grow(xin_, T * k * H);
        ones_.num_tokens = T * k;
        ones_.num_experts = E;
        ones_.top_k = 1;
        ones_.indices.assign(r_.indices.begin(), r_.indices.end());
        ones_.weights.assign(T * k, 1.0f);
        ones_.scores.clear();
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t s = 0; s < k; ++s) {
                float* dst = xin_.data() + (t * k + s) * H;
                const float w = r_.weight(t, s);
                for (std::size_t h = 0; h < H; ++h) dst[h] = w * x(t, h);
            }
        make_plan_into(plan_, ones_);
        run_routed(matrix_view<const float>(xin_.data(), T * k, H), exec);
        grow(yslots_, T * k * H);
        const matrix_view<float> ys(yslots_.data(), T * k, H);
        combine<Arch>(ys, matrix_view<const float>(rows_.data(), plan_.num_rows(), H), plan_, ones_, exec);
        for (std::size_t t = 0; t < T; ++t) {
            float* yt = y.row(t);
            for (std::size_t h = 0; h < H; ++h) yt[h] = ys(t * k, h);
            for (std::size_t s = 1; s < k; ++s)
                for (std::size_t h = 0; h < H; ++h) yt[h] += ys(t * k + s, h);
        }
    }

    template <class Executor>
    void add_shared(matrix_view<float> y, matrix_view<const float> x, Executor&& exec) {
        const std::size_t T = x.rows, H = spec_.hidden;
        shared_r_.num_tokens = T;
        shared_r_.num_experts = 1;
        shared_r_.top_k = 1;
        shared_r_.indices.assign(T, 0);
        shared_r_.weights.assign(T, 1.0f);
        shared_r_.scores.clear();
        make_plan_into(shared_plan_, shared_r_);
        grow(shared_rows_, shared_plan_.num_rows() * H);
        const matrix_view<float> rows(shared_rows_.data(), shared_plan_.num_rows(), H);
        kernels::ffn_extras act;  // the routed experts' activation (DeepSeek-V4 clamps both), no biases
        act.activation = spec_.activation;
        act.alpha = spec_.swiglu_alpha;
        act.limit = spec_.swiglu_limit;
        stages::experts<Arch, float>::run(rows, x, shared_plan_, shared_, ws_, exec, act);
        grow(shared_g_, T);
        if (spec_.shared == shared_gate::sigmoid) {
            gate_into<Arch>(matrix_view<float>(shared_g_.data(), T, 1), x, shared_gate_, {}, exec);
            for (std::size_t t = 0; t < T; ++t) shared_g_[t] = detail::sigmoid<scalar>(shared_g_[t]);
        }
        for (std::size_t r = 0; r < shared_plan_.num_rows(); ++r) {
            const std::int32_t tok = shared_plan_.row_token[r];
            if (tok < 0) continue;
            float* yt = y.row(static_cast<std::size_t>(tok));
            const float* o = rows.row(r);
            if (spec_.shared == shared_gate::sigmoid) {
                const float g = shared_g_[static_cast<std::size_t>(tok)];
                // std::fma, not `+= g * o`: compilers contract the latter into an FMA only where
                // the target has one, which made -march=x86-64 and -march=native builds differ.
                for (std::size_t h = 0; h < H; ++h) yt[h] = std::fma(g, o[h], yt[h]);
            } else {
                for (std::size_t h = 0; h < H; ++h) yt[h] += o[h];
            }
        }
    }

    static void grow(std::vector<float>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    }

    block_spec spec_;
    layer_options opt_;
    packed_type experts_;
    packed_gate gate_, shared_gate_;
    kernels::packed_experts<Arch, float> shared_;
    std::vector<float> router_b_, sel_bias_, b1_, b3_, b2_;
    router_workspace<float> router_ws_;
    replay_workspace<float> replay_ws_;
    std::vector<float> logits_, rows_, xin_, yslots_, shared_rows_, shared_g_, yzero_;
    routing<float> r_, ones_, shared_r_, real_;
    capacity_report report_;
    fill_in_report fill_;
    dispatch_plan plan_, shared_plan_;
    kernels::ffn_workspace ws_;
};

/// Deprecated alias of `moe::block` (layer.hpp's name; removal in 0.2).
template <class Arch = default_arch, class W = float>
using sparse_moe_block = block<Arch, W>;

}  // namespace moe

namespace moe::models {
using moe::block_spec;
using moe::block_weights;
using moe::shared_gate;
/// Deprecated alias of `moe::block` (models/moe_block.hpp's name; removal in 0.2).
template <class Arch = default_arch, class W = float>
using moe_block = moe::block<Arch, W>;
}  // namespace moe::models
