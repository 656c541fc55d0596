/// @file analysis/policy_compare.hpp
/// The routing-policy simulator: several routing / capacity policies run on the same logits,
/// each summarised by the numbers a policy benchmarker compares (drops, reroutes, straggler
/// ratio, padding, losses, experts per token, routing time and a modelled straggler latency).
/// `moe-route --compare` and the Python `moe.compare_policies` print these rows.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "../capacity.hpp"
#include "../dispatch.hpp"
#include "../kernels/expert_ffn.hpp"
#include "../kernels/pack.hpp"
#include "../losses.hpp"
#include "../metrics.hpp"
#include "../router.hpp"
#include "../route_policies.hpp"
#include "synthetic.hpp"

namespace moe {

/// The policies `compare_policies` knows, in its default order.
inline constexpr const char* simulator_policies[] = {
    "dropless",           "megatron-probs-1.0",     "megatron-probs-1.25", "megatron-position-1.0",
    "deepspeed-1.0",      "capacity-aware-drop",    "capacity-aware-reroute", "rectify-fill-in",
    "expert-choice",      "top-p",                  "aux-free-bias"};

/// One policy's summary.
struct policy_result {
    std::string name;
    std::vector<std::size_t> load;   ///< routed slots per expert after the policy
    double drop_rate = 0;            ///< dropped / (routed + dropped) slots
    std::size_t rerouted = 0;        ///< slots moved to another expert
    std::size_t max_load = 0;
    double max_over_mean = 0;        ///< straggler ratio
    double cv = 0;                   ///< coefficient of variation of the loads
    double padding = 0;              ///< padding rows / all rows of the dispatch plan
    double aux = 0;                  ///< Megatron load-balancing loss of the routing before drops
    double z = 0;                    ///< router z-loss of the logits
    double experts_per_token = 0;
    double us_per_token = 0;         ///< routing + capacity time, microseconds per token
    double model_ms = 0;             ///< busiest expert's rows x row cost (one expert per device)
    double ideal_ms = 0;             ///< the same with perfectly balanced loads
};

/// What the simulator needs besides the logits and the router.
struct simulator_options {
    std::size_t block = 1;        ///< dispatch block (padding to multiples of it)
    std::size_t bias_steps = 200; ///< aux-free-bias: bias update steps before the measured batch
    /// Seconds per routed row of one expert, for the modelled latency (measure_row_cost); 0
    /// leaves model_ms and ideal_ms at 0.
    double row_cost = 0;
    /// aux-free-bias: the batch of update step i (a stream of batches from the same
    /// distribution); empty = the measured logits themselves at every step.
    std::function<matrix<float>(std::size_t)> bias_batch;
};

/// Throws [moe.simulator.policy] for a name outside simulator_policies.
inline void check_policy_name(const std::string& n) {
    if (std::find_if(std::begin(simulator_policies), std::end(simulator_policies), [&](const char* p) { return n == p; }) ==
        std::end(simulator_policies)) {
        std::string all;
        for (const char* p : simulator_policies) all += (all.empty() ? "" : ", ") + std::string(p);
        MOE_THROW("moe.simulator.policy", "unknown policy '", n, "' (expected one of ", all, ")");
    }
}

/// Per-row cost (seconds) of one SwiGLU expert of H x F on this machine: moe's float kernel on
/// 256 rows, best of three.
template <class Arch = default_arch>
[[nodiscard]] double measure_row_cost(std::size_t H, std::size_t F) {
    if (H == 0 || F == 0) MOE_THROW("moe.simulator.shape", "expert shape ", H, " x ", F, " must be positive");
    splitmix64 rng(5);
    std::vector<float> w1(F * H), w3(F * H), w2(H * F);
    for (auto* v : {&w1, &w3, &w2})
        for (auto& x : *v) x = static_cast<float>(rng.uniform() - 0.5) * 0.05f;
    const auto packed = kernels::pack_experts<Arch>(w1.data(), w3.data(), w2.data(), 1, H, F);
    const std::size_t rows = 256;
    routing<float> r(rows, 1, 1, false);
    for (std::size_t t = 0; t < rows; ++t) r.indices[t] = 0, r.weights[t] = 1.0f;
    const auto plan = make_plan(r);
    const auto x = synthetic_logits(rows, H, skew{}, 1);
    matrix<float> y(rows, H);
    kernels::ffn_workspace ws;
    ws.reserve(kernels::workspace_size(plan, packed).total());
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        kernels::expert_ffn(y.view(), matrix_view<const float>(x.view()), plan, packed, ws.data(), ws.size());
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best / static_cast<double>(rows);
}

/// Runs each named policy (simulator_policies; empty = all) on `logits` routed with `cfg`
/// (top-k, score function and recipe), one result per policy in the order given. The capacity
/// policies are each peer's default: Megatron (factor 1.0 / 1.25, probs or position),
/// DeepSpeed (slot-major, renormalised after, padded to capacity), capacity-aware inference
/// (score drop or reroute, gamma 1.0), Rectify-Router fill-in after Megatron's drop; expert
/// choice (capacity factor k), top-p (p = 0.5), and the aux-loss-free bias after
/// `bias_steps` updates.
inline std::vector<policy_result> compare_policies(const matrix<float>& logits, const router_config& cfg_in,
                                                   std::vector<std::string> names = {}, const simulator_options& o = {}) {
    const std::size_t T = logits.rows, E = logits.cols, k = cfg_in.top_k;
    if (names.empty()) names.assign(std::begin(simulator_policies), std::end(simulator_policies));
    for (const auto& n : names) check_policy_name(n);
    cfg_in.validate(E);
    const double z = z_loss(logits);
    router_config cfg = cfg_in;
    cfg.keep_scores = true;
    std::vector<policy_result> results;
    for (const std::string& name : names) {
        policy_result pr;
        pr.name = name;
        routing<float> r, before;
        capacity_report rep;
        bool has_capacity = false, pad = false;
        std::vector<float> bias;
        if (name == "aux-free-bias") {  // the bias after N update steps on a stream of batches
            bias.assign(E, 0.0f);
            for (std::size_t step = 0; step < o.bias_steps; ++step) {
                const matrix<float> batch = o.bias_batch ? o.bias_batch(step) : logits;
                update_expert_bias(bias, route(batch, cfg, bias).tokens_per_expert());
            }
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (name == "expert-choice") {
            expert_choice_config c;
            c.capacity_factor = static_cast<double>(k);
            c.score = cfg.score;
            r = route_expert_choice(logits, c);
        } else if (name == "top-p") {
            top_p_config c;
            c.p = 0.5;
            c.score = cfg.score;
            r = route_top_p(logits, c);
        } else {
            r = route(logits, cfg, bias);
        }
        before = r;
        drop_config d;
        if (name.rfind("megatron", 0) == 0 || name == "rectify-fill-in") {
            d.capacity.formula = capacity_formula::megatron;
            d.capacity.factor = name == "megatron-probs-1.25" ? 1.25 : 1.0;
            d.policy = name == "megatron-position-1.0" ? drop_policy::position : drop_policy::weight;
            has_capacity = true;
        } else if (name == "deepspeed-1.0") {
            d.capacity.formula = capacity_formula::deepspeed;
            d.policy = drop_policy::slot_major;
            d.renorm_after = renormalize::clamp;
            d.renorm_eps = 1.1920929e-07f;
            has_capacity = pad = true;
        } else if (name.rfind("capacity-aware", 0) == 0) {
            d.capacity.formula = capacity_formula::capacity_aware;
            d.policy = drop_policy::score;
            d.reroute = name == "capacity-aware-reroute";
            has_capacity = true;
        }
        if (has_capacity) rep = apply_capacity(r, d);
        const load_metrics dropped = measure(r, has_capacity ? &rep : nullptr);
        if (name == "rectify-fill-in") r = fill_in(r, rep.capacity);
        pr.us_per_token = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e6 /
                          static_cast<double>(std::max<std::size_t>(T, 1));
        const auto plan = make_plan(r, o.block, pad ? rep.capacity : 0);  // DeepSpeed's [E, C, H] buffers
        const load_metrics m = measure(r, nullptr, &plan);
        pr.load = m.load;
        pr.max_load = m.max_load;
        pr.max_over_mean = m.max_over_mean;
        pr.cv = m.cv;
        pr.drop_rate = dropped.drop_rate;
        pr.rerouted = rep.rerouted.size();
        pr.padding = m.padding_fraction;
        pr.aux = load_balancing_loss(logits, before, aux_loss_config{});
        pr.z = z;
        pr.experts_per_token = mean_experts_per_token(r);
        // Modelled straggler latency: one expert per device, each device's time = its rows x the
        // per-row cost; the step waits for the busiest (pad-to-capacity: capacity rows).
        const std::size_t rows_max = pad ? rep.capacity : pr.max_load;
        pr.model_ms = static_cast<double>(rows_max) * o.row_cost * 1e3;
        pr.ideal_ms = m.mean_load * o.row_cost * 1e3;
        results.push_back(std::move(pr));
    }
    return results;
}

}  // namespace moe
