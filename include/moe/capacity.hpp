/// @file capacity.hpp
/// Expert capacity: how many rows each expert accepts, by each peer's formula, with its exact
/// arithmetic (rounding and the floating-point type it computes in).
///
/// `apply_capacity` enforces it on a routing: the slots an over-full expert cannot take are
/// dropped (index -1, weight 0) by a named policy, and reported. Reroute and fill-in build on
/// this next.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "config.hpp"
#include "rng.hpp"
#include "router.hpp"

namespace moe {

/// Named capacity formulas (T tokens, E experts, k slots per token, factor cf).
enum class capacity_formula {
    megatron,        ///< ceil((T*k / E) * cf) in double; then max(., min_capacity). Megatron's
                     ///< get_capacity(num_tokens = T*k): a capacity above T never binds.
    deepspeed,       ///< ceil(float32(k * T / E) * float32(cf)); then max(., min_capacity).
                     ///< DeepSpeed _capacity as top1gating / top2gating call it.
    deepspeed_topk,  ///< ceil(float32(T / E) * float32(cf * k)): DeepSpeed topkgating, which
                     ///< passes cf * k as one float32 tensor (5 of 425 grid points of
                     ///< T, E, k, cf differ from `deepspeed`); then max(., min_capacity).
    tutel,           ///< k * int(cf * ceil(T / E)); cf = 0: dropless (the largest load);
                     ///< cf < 0: min(dropless, k * int(-cf * ceil(T / E))); rounded up to
                     ///< `alignment`. Tutel fast_dispatch / extract_critical.
    megablocks,      ///< int(cf * (k * T / E)) in double; 0 means dropless (the largest load).
                     ///< MegaBlocks expert_capacity.
    capacity_aware,  ///< ceil(gamma * (k * T / E)), gamma = cf: "Capacity-Aware Inference"
                     ///< (He et al. 2025).
    dropless         ///< the largest load: nothing is ever dropped.
};

[[nodiscard]] inline const char* to_string(capacity_formula f) noexcept {
    switch (f) {
        case capacity_formula::megatron: return "megatron";
        case capacity_formula::deepspeed: return "deepspeed";
        case capacity_formula::deepspeed_topk: return "deepspeed_topk";
        case capacity_formula::tutel: return "tutel";
        case capacity_formula::megablocks: return "megablocks";
        case capacity_formula::capacity_aware: return "capacity_aware";
        case capacity_formula::dropless: return "dropless";
    }
    return "?";
}

/// Parses a formula name (as to_string writes it); throws [moe.capacity.formula].
[[nodiscard]] inline capacity_formula parse_capacity_formula(const std::string& s) {
    for (auto f : {capacity_formula::megatron, capacity_formula::deepspeed, capacity_formula::deepspeed_topk, capacity_formula::tutel,
                   capacity_formula::megablocks, capacity_formula::capacity_aware, capacity_formula::dropless})
        if (s == to_string(f)) return f;
    MOE_THROW("moe.capacity.formula", "unknown capacity formula '", s,
              "' (expected megatron, deepspeed, deepspeed_topk, tutel, megablocks, capacity_aware or dropless)");
}

/// How the per-expert capacity is computed.
struct capacity_config {
    capacity_formula formula = capacity_formula::megatron;
    double factor = 1.0;            ///< capacity factor (gamma for capacity_aware)
    std::size_t min_capacity = 0;   ///< lower bound (Megatron, DeepSpeed)
    std::size_t alignment = 1;      ///< round up to a multiple (Tutel)

    /// Throws moe::error for a factor the formula cannot use.
    void validate() const {
        if (!std::isfinite(factor))
            MOE_THROW("moe.capacity.factor", "capacity factor ", factor, " is not finite");
        const bool signed_ok = formula == capacity_formula::tutel;  // 0 and negative have meanings
        const bool zero_ok = signed_ok || formula == capacity_formula::megablocks || formula == capacity_formula::dropless;
        if (factor < 0 && !signed_ok)
            MOE_THROW("moe.capacity.factor", "capacity factor ", factor, " is negative (only tutel gives it a meaning)");
        if (factor == 0 && !zero_ok)
            MOE_THROW("moe.capacity.factor", "capacity factor 0 would give every expert capacity 0 (",
                      to_string(formula), "); use capacity_formula::dropless for no capacity");
        if (alignment == 0) MOE_THROW("moe.capacity.alignment", "alignment must be at least 1");
    }
};

/// The per-expert capacity for `num_tokens` tokens routed with `top_k` slots to `num_experts`
/// experts. `max_load` (the largest number of slots any expert received) is used by the
/// dropless cases (dropless; tutel with factor <= 0; megablocks giving 0). `slots_per_token`,
/// when > 0, replaces k in the formulas built on T * k (megatron, deepspeed, megablocks,
/// capacity_aware): under dynamic k (top-p, null experts) it is the mean number of routed slots
/// of the tokens that have any, so tokens masked out (padding) still count in T as the peers
/// count them.
[[nodiscard]] inline std::size_t expert_capacity(const capacity_config& c, std::size_t num_tokens,
                                                 std::size_t num_experts, std::size_t top_k, std::size_t max_load,
                                                 double slots_per_token = 0.0) {
    c.validate();
    if (num_experts == 0) MOE_THROW("moe.capacity.shape", "num_experts=0");
    if (top_k == 0) MOE_THROW("moe.capacity.shape", "top_k=0");
    const double T = static_cast<double>(num_tokens), E = static_cast<double>(num_experts),
                 k = slots_per_token > 0.0 ? slots_per_token : static_cast<double>(top_k);
    auto at_least_min = [&](double v) { return std::max(static_cast<std::size_t>(v), c.min_capacity); };
    switch (c.formula) {
        case capacity_formula::megatron: return at_least_min(std::ceil((T * k / E) * c.factor));
        case capacity_formula::deepspeed: {
            const float prod = static_cast<float>(k * (T / E)) * static_cast<float>(c.factor);
            return at_least_min(std::ceil(static_cast<double>(prod)));
        }
        case capacity_formula::deepspeed_topk: {
            const float prod = static_cast<float>(T / E) * static_cast<float>(c.factor * k);
            return at_least_min(std::ceil(static_cast<double>(prod)));
        }
        case capacity_formula::tutel: {
            const std::size_t per_expert = (num_tokens + num_experts - 1) / num_experts;
            const auto rule = [&](double f) {
                return top_k * static_cast<std::size_t>(f * static_cast<double>(per_expert));
            };
            std::size_t cap = c.factor > 0 ? rule(c.factor) : max_load;
            if (c.factor < 0) cap = std::min(cap, rule(-c.factor));
            const std::size_t rem = cap % c.alignment;
            return rem ? cap + c.alignment - rem : cap;
        }
        case capacity_formula::megablocks: {
            const std::size_t cap = static_cast<std::size_t>(c.factor * (k * T / E));
            return cap == 0 ? max_load : cap;
        }
        case capacity_formula::capacity_aware: return at_least_min(std::ceil(c.factor * (k * T / E)));
        case capacity_formula::dropless: return max_load;
    }
    return max_load;
}

/// Which routed slots an over-full expert keeps (ties always go to the lower token index).
enum class drop_policy {
    weight,             ///< the largest final weights (Megatron drop_policy "probs")
    score,              ///< the largest full scores for that expert, e.g. the full-softmax
                        ///< probability (capacity-aware inference "score"; needs keep_scores)
    position,           ///< the first in token order (Megatron / MegaBlocks "position")
    slot_major,         ///< every token's first choice before any second choice, each in token
                        ///< order (DeepSpeed, Tutel)
    batch_prioritized,  ///< slot-major over tokens ordered by their largest score (Tutel BPR;
                        ///< needs keep_scores)
    random              ///< a seeded random priority per slot (DeepSpeed RTS)
};

[[nodiscard]] inline const char* to_string(drop_policy p) noexcept {
    switch (p) {
        case drop_policy::weight: return "weight";
        case drop_policy::score: return "score";
        case drop_policy::position: return "position";
        case drop_policy::slot_major: return "slot_major";
        case drop_policy::batch_prioritized: return "batch_prioritized";
        case drop_policy::random: return "random";
    }
    return "?";
}

/// Parses a policy name (as to_string writes it); throws [moe.capacity.policy].
[[nodiscard]] inline drop_policy parse_drop_policy(const std::string& s) {
    for (auto p : {drop_policy::weight, drop_policy::score, drop_policy::position, drop_policy::slot_major,
                   drop_policy::batch_prioritized, drop_policy::random})
        if (s == to_string(p)) return p;
    MOE_THROW("moe.capacity.policy", "unknown drop policy '", s,
              "' (expected weight, score, position, slot_major, batch_prioritized or random)");
}

/// Capacity enforcement: the formula, the drop policy, and what happens to the kept weights.
struct drop_config {
    capacity_config capacity;
    drop_policy policy = drop_policy::weight;
    /// Renormalise each token's kept weights after the drop (DeepSpeed: clamp at float eps);
    /// none keeps them (Megatron, Tutel, which normalise before, in the router).
    renormalize renorm_after = renormalize::none;
    float renorm_eps = 0.0f;
    std::uint64_t seed = 0;  ///< drop_policy::random
    /// Reroute overflowed slots instead of dropping them ("Capacity-Aware Inference", He et al.
    /// 2025): in rounds, each overflowed slot proposes to its token's next-best expert (by full
    /// score) that the token does not already use; an expert accepts its best-scoring proposals
    /// while it has room (accepted slots stay); the rest propose again. A slot with no
    /// candidate left is dropped. The rerouted slot's weight is the token's score for the new
    /// expert (renorm_after then applies). Needs the full scores (keep_scores).
    bool reroute = false;
    /// Expert -> device (rank, GPU). When set, a slot is only rerouted to experts on the device
    /// of its original expert (Rectify-Router's intra-GPU rectification: no extra traffic).
    std::vector<std::int32_t> placement;
    /// Explicit per-expert capacities (E values); when set they replace the formula. Also the
    /// way to run the "expanded" variant: route with k' > k, then cap each expert at the
    /// capacity computed for k, with drop_policy::score (each expert keeps the best tokens
    /// among all that list it in their top-k').
    std::vector<std::size_t> per_expert;
};

/// What apply_capacity did.
struct capacity_report {
    std::size_t capacity = 0;              ///< the formula's capacity (the largest, with per_expert)
    std::vector<std::size_t> capacities;   ///< per expert: what was enforced
    std::vector<std::size_t> load_before;  ///< routed slots per expert before the drop
    std::vector<std::size_t> load_after;   ///< after: never above capacity
    std::vector<std::int32_t> dropped;     ///< dropped slots as token * k + slot, ascending
    std::vector<std::int32_t> rerouted;    ///< slots moved to another expert, ascending
    std::vector<std::int32_t> original;    ///< for each rerouted slot, the expert it left
    std::size_t reroute_rounds = 0;
};

namespace detail {

/// The reroute rounds of apply_capacity (see drop_config::reroute). `drop` marks overflowed
/// slots on entry and the ones still unplaced on exit; `taken` is each expert's load.
template <class W>
void reroute_overflow(routing<W>& r, const drop_config& cfg, const std::vector<std::size_t>& cap, std::vector<std::size_t>& taken,
                      std::vector<char>& drop, capacity_report& rep) {
    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    // A live slot walks its token's experts in (full score descending, index ascending) order,
    // from a cursor: each step takes the best eligible expert after the cursor (an O(E) scan;
    // most slots are placed within a few steps, so no full sort is needed).
    struct proposal {
        std::int32_t slot;       // token * k + s
        std::int32_t origin;     // the expert it overflowed from
        W cursor_score = std::numeric_limits<W>::infinity();
        std::int32_t cursor_expert = -1;
        std::int32_t target = -1;
    };
    std::vector<proposal> live;
    for (std::size_t i = 0; i < T * k; ++i)
        if (drop[i]) live.push_back({static_cast<std::int32_t>(i), r.indices[i]});
    auto holds = [&](std::size_t t, std::int32_t e) {
        for (std::size_t s = 0; s < k; ++s)
            if (!drop[t * k + s] && r.indices[t * k + s] == e) return true;
        return false;
    };
    std::vector<std::pair<std::int32_t, std::size_t>> by_expert;  // (expert, proposal index)
    while (!live.empty()) {
        ++rep.reroute_rounds;
        // Each live slot proposes to its token's next candidate that has room, is not already
        // used by the token, and (with a placement) lives on the origin's device. Experts only
        // fill up and tokens only gain experts, so a skipped expert never becomes eligible.
        by_expert.clear();
        for (std::size_t p = 0; p < live.size(); ++p) {
            proposal& pr = live[p];
            const std::size_t t = static_cast<std::size_t>(pr.slot) / k;
            const W* sc = r.scores.data() + t * E;
            std::int32_t best = -1;
            for (std::size_t e = 0; e < E; ++e) {
                const W v = sc[e];
                const bool after = v < pr.cursor_score || (v == pr.cursor_score && static_cast<std::int32_t>(e) > pr.cursor_expert);
                if (!after || (best >= 0 && !(v > sc[best]))) continue;
                if (taken[e] >= cap[e]) continue;
                if (!cfg.placement.empty() && cfg.placement[e] != cfg.placement[static_cast<std::size_t>(pr.origin)]) continue;
                if (holds(t, static_cast<std::int32_t>(e))) continue;
                best = static_cast<std::int32_t>(e);
            }
            pr.target = best;
            if (best >= 0) {
                pr.cursor_score = sc[best];
                pr.cursor_expert = best;
            }
            if (pr.target >= 0) by_expert.emplace_back(pr.target, p);
        }
        if (by_expert.empty()) break;
        // Experts accept their best-scoring proposals while they have room (ties: lower slot).
        std::stable_sort(by_expert.begin(), by_expert.end(), [&](const auto& a, const auto& b) {
            if (a.first != b.first) return a.first < b.first;
            const proposal &pa = live[a.second], &pb = live[b.second];
            const W sa = r.score(static_cast<std::size_t>(pa.slot) / k, static_cast<std::size_t>(a.first));
            const W sb = r.score(static_cast<std::size_t>(pb.slot) / k, static_cast<std::size_t>(b.first));
            if (sa != sb) return sa > sb;
            return pa.slot < pb.slot;
        });
        std::vector<char> placed(live.size(), 0);
        for (const auto& [e, p] : by_expert) {
            const std::size_t t = static_cast<std::size_t>(live[p].slot) / k;
            // Two slots of one token may propose to the same expert in a round: only the first.
            if (taken[static_cast<std::size_t>(e)] >= cap[static_cast<std::size_t>(e)] || holds(t, e)) continue;
            const std::size_t i = static_cast<std::size_t>(live[p].slot);
            ++taken[static_cast<std::size_t>(e)];
            drop[i] = 0;
            r.indices[i] = e;
            r.weights[i] = r.score(t, static_cast<std::size_t>(e));
            rep.rerouted.push_back(live[p].slot);
            rep.original.push_back(live[p].origin);
            placed[p] = 1;
        }
        std::size_t n = 0;
        for (std::size_t p = 0; p < live.size(); ++p)
            if (!placed[p] && live[p].target >= 0) live[n++] = live[p];  // no target: nothing left
        live.resize(n);
    }
    // Report rerouted slots in ascending order (with their origins).
    std::vector<std::size_t> idx(rep.rerouted.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return rep.rerouted[a] < rep.rerouted[b]; });
    std::vector<std::int32_t> rr, orig;
    for (std::size_t j : idx) {
        rr.push_back(rep.rerouted[j]);
        orig.push_back(rep.original[j]);
    }
    rep.rerouted = std::move(rr);
    rep.original = std::move(orig);
}

}  // namespace detail

/// Enforces per-expert capacity on `r` in place: dropped slots become index -1, weight 0, and
/// are listed in the report (nothing is lost silently). Slots keep their positions.
template <class W>
capacity_report apply_capacity(routing<W>& r, const drop_config& cfg) {
    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    capacity_report rep;
    rep.load_before = r.tokens_per_expert();
    const std::size_t max_load = rep.load_before.empty() ? 0 : *std::max_element(rep.load_before.begin(), rep.load_before.end());
    // Dynamic k: the mean slots of the tokens routed at all (fixed top-k gives exactly k).
    std::size_t routed = 0, routed_tokens = 0;
    for (std::size_t t = 0; t < T; ++t) {
        std::size_t n = 0;
        for (std::size_t s = 0; s < k; ++s) n += r.indices[t * k + s] >= 0;
        routed += n;
        routed_tokens += n > 0;
    }
    const double slots_per_token =
        routed_tokens && routed != routed_tokens * k ? static_cast<double>(routed) / static_cast<double>(routed_tokens) : 0.0;
    rep.capacity = expert_capacity(cfg.capacity, T, E, k, max_load, slots_per_token);
    const bool needs_scores = cfg.policy == drop_policy::score || cfg.policy == drop_policy::batch_prioritized;
    if (needs_scores && r.scores.size() != T * E)
        MOE_THROW("moe.capacity.scores", "drop policy ", to_string(cfg.policy),
                  " ranks by full scores: route with keep_scores = true");
    if (cfg.reroute && r.scores.size() != T * E)
        MOE_THROW("moe.capacity.scores", "reroute ranks candidate experts by full scores: route with keep_scores = true");
    if (!cfg.placement.empty()) {
        if (cfg.placement.size() != E)
            MOE_THROW("moe.capacity.placement", "placement maps ", cfg.placement.size(), " experts, expected num_experts=", E);
        for (std::size_t e = 0; e < E; ++e)
            if (cfg.placement[e] < 0)
                MOE_THROW("moe.capacity.placement", "placement of expert ", e, " is ", cfg.placement[e], " (devices are >= 0)");
    }
    if (cfg.renorm_after == renormalize::clamp && !(cfg.renorm_eps > 0.0f))
        MOE_THROW("moe.capacity.renorm_eps", "renormalize::clamp after the drop needs renorm_eps > 0");
    if (!cfg.per_expert.empty()) {
        if (cfg.per_expert.size() != E)
            MOE_THROW("moe.capacity.per_expert", "per_expert has ", cfg.per_expert.size(), " capacities, expected num_experts=", E);
        rep.capacities = cfg.per_expert;
        rep.capacity = E ? *std::max_element(rep.capacities.begin(), rep.capacities.end()) : 0;
    } else {
        rep.capacities.assign(E, rep.capacity);
    }
    // A capacity of 0 everywhere would drop every slot: a configuration error, not a policy.
    if (rep.capacity == 0 && max_load > 0)
        MOE_THROW("moe.capacity.zero", "capacity is 0 for every expert (", to_string(cfg.capacity.formula), ", factor ",
                  cfg.capacity.factor, ", ", T, " tokens, ", E, " experts, k=", k, "): every slot would be dropped");
    const std::vector<std::size_t>& cap = rep.capacities;

    // The order in which slots claim room: a priority list, first claimed first kept.
    std::vector<std::int32_t> order;
    order.reserve(T * k);
    auto push_token_major = [&](const std::vector<std::int32_t>& tokens) {
        for (std::size_t s = 0; s < k; ++s)
            for (std::int32_t t : tokens) order.push_back(t * static_cast<std::int32_t>(k) + static_cast<std::int32_t>(s));
    };
    std::vector<std::int32_t> tokens(T);
    std::iota(tokens.begin(), tokens.end(), 0);
    switch (cfg.policy) {
        case drop_policy::position:
            for (std::size_t i = 0; i < T * k; ++i) order.push_back(static_cast<std::int32_t>(i));
            break;
        case drop_policy::slot_major: push_token_major(tokens); break;
        case drop_policy::batch_prioritized: {
            std::vector<W> best(T, -std::numeric_limits<W>::infinity());
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t e = 0; e < E; ++e) best[t] = std::max(best[t], r.score(t, e));
            std::stable_sort(tokens.begin(), tokens.end(), [&](std::int32_t a, std::int32_t b) { return best[a] > best[b]; });
            push_token_major(tokens);
            break;
        }
        case drop_policy::weight:
        case drop_policy::score:
        case drop_policy::random: break;  // ranked per expert below
    }

    std::vector<std::size_t> taken(E, 0);
    std::vector<char> drop(T * k, 0);
    if (order.empty() && T * k > 0) {
        // Key-ranked policies: bucket the routed slots by expert (slot order inside a bucket),
        // then each over-full expert keeps its C largest keys; ties to the lower slot index.
        std::vector<double> key(T * k);
        for (std::size_t i = 0; i < T * k; ++i) {
            const std::int32_t e = r.indices[i];
            if (e < 0) continue;
            if (cfg.policy == drop_policy::weight) key[i] = static_cast<double>(r.weights[i]);
            else if (cfg.policy == drop_policy::score) key[i] = static_cast<double>(r.score(i / k, static_cast<std::size_t>(e)));
            else key[i] = splitmix64(cfg.seed ^ (0x9E3779B97F4A7C15ull * (i + 1))).uniform();
        }
        std::vector<std::size_t> start(E + 1, 0);
        for (std::size_t i = 0; i < T * k; ++i)
            if (r.indices[i] >= 0) ++start[static_cast<std::size_t>(r.indices[i]) + 1];
        for (std::size_t e = 0; e < E; ++e) start[e + 1] += start[e];
        std::vector<std::int32_t> bucket(start[E]);
        std::vector<std::size_t> fill(start.begin(), start.end() - 1);
        for (std::size_t i = 0; i < T * k; ++i)
            if (r.indices[i] >= 0) bucket[fill[static_cast<std::size_t>(r.indices[i])]++] = static_cast<std::int32_t>(i);
        const auto better = [&](std::int32_t a, std::int32_t b) {
            return key[static_cast<std::size_t>(a)] > key[static_cast<std::size_t>(b)] ||
                   (key[static_cast<std::size_t>(a)] == key[static_cast<std::size_t>(b)] && a < b);
        };
        for (std::size_t e = 0; e < E; ++e) {
            auto* b = bucket.data() + start[e];
            const std::size_t n = start[e + 1] - start[e];
            const std::size_t C = cap[e];
            taken[e] = std::min(n, C);
            if (n <= C) continue;
            std::nth_element(b, b + C, b + n, better);  // b[0, C) are the kept ones
            for (std::size_t j = C; j < n; ++j) drop[static_cast<std::size_t>(b[j])] = 1;
        }
    }
    for (std::int32_t i : order) {  // order-based policies: first claimed, first kept
        const std::int32_t e = r.indices[static_cast<std::size_t>(i)];
        if (e < 0) continue;
        if (taken[static_cast<std::size_t>(e)] < cap[static_cast<std::size_t>(e)]) ++taken[static_cast<std::size_t>(e)];
        else drop[static_cast<std::size_t>(i)] = 1;
    }
    if (cfg.reroute) detail::reroute_overflow(r, cfg, cap, taken, drop, rep);
    for (std::size_t i = 0; i < T * k; ++i)
        if (drop[i]) {
            r.indices[i] = -1;
            r.weights[i] = W(0);
            rep.dropped.push_back(static_cast<std::int32_t>(i));
        }
    rep.load_after = std::move(taken);

    for (std::size_t t = 0; t < T && cfg.renorm_after != renormalize::none; ++t)
        detail::renormalize_weights(cfg.renorm_after, cfg.renorm_eps, r.weights.data() + t * k, k);
    return rep;
}

/// What fill_in added.
struct fill_in_report {
    std::size_t filled = 0;               ///< (token, expert) pairs added
    std::vector<std::size_t> load_after;  ///< per expert, never above the capacity
};

/// Fill-in rectification (Rectify-Router, Zeng et al. 2024): each expert with fewer than
/// `capacity` slots takes, up to capacity, the tokens with the highest full scores for it that
/// are not routed to it yet (ties: lower token), with the score as weight: idle rows of a
/// capacity-padded expert do useful work at no extra latency. Returns a routing with
/// k_max = k + the most fills any token received; a token's extra slots after its fills are -1
/// and its first k slots are unchanged. Needs full scores (keep_scores).
template <class W>
[[nodiscard]] routing<W> fill_in(const routing<W>& r, std::size_t capacity, fill_in_report* report = nullptr) {
    const std::size_t T = r.num_tokens, E = r.num_experts, k = r.top_k;
    if (r.scores.size() != T * E)
        MOE_THROW("moe.capacity.scores", "fill-in ranks tokens by full scores: route with keep_scores = true");
    std::vector<std::size_t> load = r.tokens_per_expert();
    std::vector<char> routed(T * E, 0);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t s = 0; s < k; ++s)
            if (r.index(t, s) >= 0) routed[t * E + static_cast<std::size_t>(r.index(t, s))] = 1;
    std::vector<std::vector<std::int32_t>> extra(T);
    std::vector<std::int32_t> cand;
    std::size_t filled = 0;
    for (std::size_t e = 0; e < E; ++e) {
        if (load[e] >= capacity) continue;
        cand.clear();
        for (std::size_t t = 0; t < T; ++t)
            if (!routed[t * E + e]) cand.push_back(static_cast<std::int32_t>(t));
        const std::size_t take = std::min(capacity - load[e], cand.size());
        const auto better = [&](std::int32_t a, std::int32_t b) {
            const W sa = r.score(static_cast<std::size_t>(a), e), sb = r.score(static_cast<std::size_t>(b), e);
            return sa > sb || (sa == sb && a < b);
        };
        std::partial_sort(cand.begin(), cand.begin() + static_cast<long>(take), cand.end(), better);
        std::sort(cand.begin(), cand.begin() + static_cast<long>(take));  // record fills in token order
        for (std::size_t j = 0; j < take; ++j) extra[static_cast<std::size_t>(cand[j])].push_back(static_cast<std::int32_t>(e));
        load[e] += take;
        filled += take;
    }
    std::size_t m = 0;
    for (const auto& x : extra) m = std::max(m, x.size());
    routing<W> out(T, E, k + m, !r.scores.empty());
    out.scores = r.scores;
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t s = 0; s < k; ++s) {
            out.indices[t * (k + m) + s] = r.index(t, s);
            out.weights[t * (k + m) + s] = r.weight(t, s);
        }
        for (std::size_t j = 0; j < extra[t].size(); ++j) {
            const std::int32_t e = extra[t][j];
            out.indices[t * (k + m) + k + j] = e;
            out.weights[t * (k + m) + k + j] = r.score(t, static_cast<std::size_t>(e));
        }
    }
    if (report) {
        report->filled = filled;
        report->load_after = std::move(load);
    }
    return out;
}

}  // namespace moe
