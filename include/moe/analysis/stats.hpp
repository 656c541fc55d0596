/// @file analysis/stats.hpp
/// Routing statistics of one layer's routing and of a multi-layer trace: what an expert-load
/// endpoint or a routing trace reports (load, imbalance, fairness, entropy), what an offloading
/// cache lives on (how often consecutive tokens share experts) and the drop rate a capacity would
/// cause. Pure functions of their inputs; docs/research.md states each formula.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "../config.hpp"
#include "../routing.hpp"
#include "trace.hpp"

namespace moe {

/// Statistics of one layer's routing (T tokens, E experts, k slots; -1 slots do not count).
struct routing_statistics {
    std::vector<std::size_t> load;   ///< routed slots per expert
    std::size_t routed = 0;          ///< sum of load
    double mean_load = 0;            ///< routed / E
    double max_over_mean = 0;        ///< max load / mean load (0 when nothing is routed)
    double cv = 0;                   ///< population std of the loads / their mean (0 when nothing is routed)
    double jain = 0;                 ///< Jain's fairness index (sum l)^2 / (E sum l^2): 1 = balanced, 1/E = one expert
    double load_entropy = 0;         ///< -sum p_e ln p_e, p = load / routed (nats; ln E = balanced)
    /// Mean over tokens of -sum_e q_te ln q_te, q_t = the token's scores divided by their sum
    /// (nats); NaN when the routing kept no scores.
    double routing_entropy = std::numeric_limits<double>::quiet_NaN();
    /// Mean over tokens t >= 1 with an expert of |S_t n S_(t-1)| / |S_t|, S_t = token t's experts:
    /// the fraction of a token's experts the previous token also used (NaN for fewer than 2 tokens).
    double adjacent_overlap = std::numeric_limits<double>::quiet_NaN();
    std::size_t capacity = 0;        ///< the capacity the drop rate assumes (0: none)
    /// sum_e max(0, load_e - capacity) / routed: the slots a per-expert capacity would drop,
    /// whatever the drop policy (0 without a capacity).
    double drop_rate = 0;
};

namespace detail {

inline bool slot_has(const std::int32_t* s, std::size_t k, std::int32_t e) noexcept {
    for (std::size_t j = 0; j < k; ++j)
        if (s[j] == e) return true;
    return false;
}

/// Mean over the tokens t with an expert and a row `prev(t)` (nullptr: skip t) of
/// |A_t n prev(t)| / |A_t|, A_t = the experts of a's row t (a: T x k indices, -1 = empty).
template <class Prev>
double mean_overlap(const std::int32_t* a, std::size_t T, std::size_t k, Prev prev) noexcept {
    double sum = 0;
    std::size_t n = 0;
    for (std::size_t t = 0; t < T; ++t) {
        const std::int32_t* b = prev(t);
        if (!b) continue;
        const std::int32_t* s = a + t * k;
        std::size_t mine = 0, shared = 0;
        for (std::size_t j = 0; j < k; ++j) {
            if (s[j] < 0) continue;
            ++mine;
            shared += slot_has(b, k, s[j]);
        }
        if (mine == 0) continue;
        sum += static_cast<double>(shared) / static_cast<double>(mine);
        ++n;
    }
    return n ? sum / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
}

inline routing_statistics load_statistics(std::vector<std::size_t> load, std::size_t capacity) {
    routing_statistics s;
    const std::size_t E = load.size();
    s.load = std::move(load);
    s.capacity = capacity;
    for (std::size_t c : s.load) s.routed += c;
    if (E == 0 || s.routed == 0) return s;
    const double total = static_cast<double>(s.routed);
    s.mean_load = total / static_cast<double>(E);
    double var = 0, sq = 0, ent = 0, over = 0;
    std::size_t mx = 0;
    for (std::size_t c : s.load) {
        const double x = static_cast<double>(c);
        var += (x - s.mean_load) * (x - s.mean_load);
        sq += x * x;
        mx = std::max(mx, c);
        if (c > 0) ent -= (x / total) * std::log(x / total);
        if (capacity > 0 && c > capacity) over += static_cast<double>(c - capacity);
    }
    s.max_over_mean = static_cast<double>(mx) / s.mean_load;
    s.cv = std::sqrt(var / static_cast<double>(E)) / s.mean_load;
    s.jain = total * total / (static_cast<double>(E) * sq);
    s.load_entropy = ent;
    s.drop_rate = over / total;
    return s;
}

}  // namespace detail

/// Statistics of `r`; `capacity` > 0 adds the drop rate that capacity would cause.
template <class W>
[[nodiscard]] routing_statistics routing_stats(const routing<W>& r, std::size_t capacity = 0) {
    routing_statistics s = detail::load_statistics(r.tokens_per_expert(), capacity);
    const std::size_t T = r.num_tokens, k = r.top_k, E = r.num_experts;
    const std::int32_t* idx = r.indices.data();
    s.adjacent_overlap = detail::mean_overlap(idx, T, k, [idx, k](std::size_t t) { return t ? idx + (t - 1) * k : nullptr; });
    if (!r.scores.empty() && T > 0) {
        double sum = 0;
        for (std::size_t t = 0; t < T; ++t) {
            double z = 0, h = 0;
            for (std::size_t e = 0; e < E; ++e) z += static_cast<double>(r.score(t, e));
            for (std::size_t e = 0; e < E; ++e) {
                const double q = static_cast<double>(r.score(t, e)) / z;
                if (q > 0) h -= q * std::log(q);
            }
            sum += h;
        }
        s.routing_entropy = sum / static_cast<double>(T);
    }
    return s;
}

/// Statistics of every layer of a trace, and how the layers relate.
struct trace_statistics {
    std::vector<routing_statistics> layers;  ///< per layer (no routing entropy: traces hold indices)
    /// The loads summed over layers; adjacent_overlap: the layers' mean; drop_rate: all layers'
    /// dropped slots over all routed slots (capacity: the per-layer one).
    routing_statistics total;
    /// layer_overlap[l - 1] = mean over tokens of |S_(l,t) n S_(l-1,t)| / |S_(l,t)|: the fraction
    /// of a token's layer-l expert indices it also used in layer l - 1 (expert e of two layers is
    /// a different expert: this measures index persistence, which up-cycled models and
    /// layer-prefetching caches show; transition_counts gives the full E x E picture).
    std::vector<double> layer_overlap;
};

/// Statistics of a trace; `capacity` as in routing_stats (per layer and expert).
/// Throws the trace's own [moe.trace.shape] / [moe.trace.index].
[[nodiscard]] inline trace_statistics routing_stats(const routing_trace& tr, std::size_t capacity = 0) {
    tr.validate();
    trace_statistics out;
    const std::size_t L = tr.num_layers, T = tr.num_tokens, k = tr.top_k, E = tr.num_experts;
    std::vector<std::size_t> sum(E, 0);
    double adj = 0, dropped = 0;
    std::size_t adj_n = 0;
    for (std::size_t l = 0; l < L; ++l) {
        const routing<float> r = tr.layer(l);
        out.layers.push_back(routing_stats(r, capacity));
        for (std::size_t e = 0; e < E; ++e) sum[e] += out.layers.back().load[e];
        dropped += out.layers.back().drop_rate * static_cast<double>(out.layers.back().routed);
        if (!std::isnan(out.layers.back().adjacent_overlap)) {
            adj += out.layers.back().adjacent_overlap;
            ++adj_n;
        }
        if (l > 0) {
            const std::int32_t* a = tr.indices.data() + l * T * k;
            const std::int32_t* b = tr.indices.data() + (l - 1) * T * k;
            out.layer_overlap.push_back(detail::mean_overlap(a, T, k, [b, k](std::size_t t) { return b + t * k; }));
        }
    }
    out.total = detail::load_statistics(std::move(sum), capacity);
    out.total.drop_rate = out.total.routed ? dropped / static_cast<double>(out.total.routed) : 0.0;
    out.total.adjacent_overlap = adj_n ? adj / static_cast<double>(adj_n) : std::numeric_limits<double>::quiet_NaN();
    return out;
}

}  // namespace moe
