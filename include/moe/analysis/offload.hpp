/// @file analysis/offload.hpp
/// Expert offloading analysis over a routing trace: how well a fast memory that holds m
/// experts per layer serves consecutive tokens.
///
///  - Local routing consistency ("Not All Models Suit Expert Offloading", Liang et al. 2025):
///    SRP(L), how well one fixed expert set covers a segment of L tokens, and SCH(L, m), the
///    best hit rate of a cache of m experts chosen for each segment of L tokens.
///  - A cache simulator, one cache of m experts per layer, tokens in order (decode), layers in
///    order within a token: LRU, LFU, Belady's optimal (evict the expert used farthest in the
///    future; no policy loads fewer experts), and prefetch-next-layer (after layer l, load the
///    experts the transition counts predict for layer l+1). Reports hits, loads and bytes
///    moved per token for an expert size.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../tensor.hpp"
#include "trace.hpp"

namespace moe {

namespace detail {

inline void check_segment(const routing_trace& tr, std::size_t layer, std::size_t seg_len) {
    if (layer >= tr.num_layers) MOE_THROW("moe.trace.layer", "layer ", layer, " is past the trace's ", tr.num_layers, " layers");
    if (seg_len == 0 || seg_len > tr.num_tokens)
        MOE_THROW("moe.offload.segment", "segment length ", seg_len, " must be in [1, num_tokens=", tr.num_tokens, "]");
}

/// Activation counts of every expert in each sliding segment [i, i + L) of layer `layer`,
/// calling f(counts) once per segment start i = 0 .. T - L.
template <class F>
void for_each_segment(const routing_trace& tr, std::size_t layer, std::size_t seg_len, F&& f) {
    std::vector<std::size_t> c(tr.num_experts, 0);
    auto add = [&](std::size_t t, int sign) {
        for (std::size_t s = 0; s < tr.top_k; ++s) {
            const std::int32_t e = tr.at(layer, t, s);
            if (e < 0) continue;
            if (sign > 0) ++c[static_cast<std::size_t>(e)];
            else --c[static_cast<std::size_t>(e)];
        }
    };
    for (std::size_t t = 0; t < seg_len; ++t) add(t, +1);
    for (std::size_t i = 0;; ++i) {
        f(static_cast<const std::vector<std::size_t>&>(c));
        if (i + seg_len >= tr.num_tokens) break;
        add(i, -1);
        add(i + seg_len, +1);
    }
}

}  // namespace detail

/// SRP(L) of one layer, and the count threshold that attains it.
struct srp_result {
    double srp = 0;             ///< the best F1 over thresholds
    std::size_t threshold = 0;  ///< theta: the segment's experts with >= theta activations
    double precision = 0, recall = 0;
};

/// Segment Routing best Performance: over every segment of L consecutive tokens (sliding,
/// stride 1), predict the fixed expert set {e : count_e >= theta} for all L tokens; with
/// matches = sum of the set's counts, predictions = |set| * L, activations = sum of counts
/// (all summed over segments), F1(theta) = 2 matches / (predictions + activations), and
/// SRP = max over theta in 0..L (the smallest theta on ties). Throws [moe.offload.segment].
[[nodiscard]] inline srp_result segment_routing_performance(const routing_trace& tr, std::size_t layer, std::size_t seg_len) {
    detail::check_segment(tr, layer, seg_len);
    // hist[c] = (segment, expert) pairs with count c.
    std::vector<double> hist(seg_len + 1, 0.0);
    detail::for_each_segment(tr, layer, seg_len, [&](const std::vector<std::size_t>& c) {
        for (std::size_t n : c) hist[std::min(n, seg_len)] += 1.0;
    });
    double acts = 0;
    for (std::size_t c = 0; c <= seg_len; ++c) acts += hist[c] * static_cast<double>(c);
    srp_result best;
    double matches = 0, preds = 0;
    std::vector<double> f1(seg_len + 1), m(seg_len + 1), p(seg_len + 1);
    for (std::size_t th = seg_len + 1; th-- > 0;) {  // cumulative from the top
        matches += hist[th] * static_cast<double>(th);
        preds += hist[th] * static_cast<double>(seg_len);
        m[th] = matches;
        p[th] = preds;
        f1[th] = 2.0 * matches / std::max(preds + acts, 1.0);
    }
    for (std::size_t th = 0; th <= seg_len; ++th)
        if (th == 0 || f1[th] > best.srp) {
            best.srp = f1[th];
            best.threshold = th;
            best.precision = p[th] > 0 ? m[th] / p[th] : 0.0;
            best.recall = acts > 0 ? m[th] / acts : 0.0;
        }
    return best;
}

/// Segment Cache best Hit rate: over every segment of L consecutive tokens (sliding), a cache
/// of m experts holding the segment's m most activated experts (the best fixed contents for
/// it) serves sum of their counts out of all the segment's activations; SCH(L, m) is that
/// fraction over all segments. (The authors' code scores a per-token variant that also breaks
/// ties by recency; this is the segment statement of the definition.)
[[nodiscard]] inline double segment_cache_hit_rate(const routing_trace& tr, std::size_t layer, std::size_t seg_len, std::size_t m) {
    detail::check_segment(tr, layer, seg_len);
    double hits = 0, acts = 0;
    std::vector<std::size_t> sorted;
    detail::for_each_segment(tr, layer, seg_len, [&](const std::vector<std::size_t>& c) {
        sorted = c;
        const std::size_t keep = std::min(m, sorted.size());
        std::partial_sort(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(keep), sorted.end(), std::greater<>());
        for (std::size_t i = 0; i < sorted.size(); ++i) {
            acts += static_cast<double>(sorted[i]);
            if (i < keep) hits += static_cast<double>(sorted[i]);
        }
    });
    return acts > 0 ? hits / acts : 0.0;
}

enum class cache_policy { lru, lfu, belady, prefetch };

[[nodiscard]] inline const char* to_string(cache_policy p) noexcept {
    switch (p) {
        case cache_policy::lru: return "lru";
        case cache_policy::lfu: return "lfu";
        case cache_policy::belady: return "belady";
        case cache_policy::prefetch: return "prefetch";
    }
    return "?";
}

[[nodiscard]] inline cache_policy parse_cache_policy(const std::string& s) {
    for (auto p : {cache_policy::lru, cache_policy::lfu, cache_policy::belady, cache_policy::prefetch})
        if (s == to_string(p)) return p;
    MOE_THROW("moe.offload.policy", "unknown cache policy '", s, "' (expected lru, lfu, belady or prefetch)");
}

struct cache_result {
    cache_policy policy = cache_policy::lru;
    std::size_t capacity = 0;     ///< m experts per layer
    std::size_t accesses = 0;     ///< routed slots
    std::size_t hits = 0;         ///< slots whose expert was resident when its layer ran
    std::size_t loads = 0;        ///< experts moved into fast memory (misses + prefetches)
    std::size_t prefetches = 0;   ///< loads made ahead of need (prefetch policy)
    std::size_t num_tokens = 0;
    [[nodiscard]] double hit_rate() const noexcept { return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0; }
    /// Bytes moved into fast memory per token for experts of `expert_bytes` each.
    [[nodiscard]] double bytes_per_token(double expert_bytes) const noexcept {
        return num_tokens ? static_cast<double>(loads) * expert_bytes / static_cast<double>(num_tokens) : 0.0;
    }
};

struct cache_options {
    /// prefetch: experts loaded ahead into layer l+1's cache after layer l (0 = top_k).
    std::size_t prefetch_width = 0;
    /// prefetch: transition counts (L - 1 matrices E x E, e.g. transition_counts of a
    /// calibration trace); empty = those of the simulated trace itself (in-sample).
    std::vector<matrix<double>> transitions;
};

/// Simulates one cache of `capacity` experts per layer over the trace (tokens in order, each
/// token's layers in order; a token's own experts are never evicted for each other while
/// capacity allows). Deterministic: ties evict the lower expert index.
/// Throws [moe.offload.capacity] for capacity 0, [moe.offload.transitions] for transition
/// matrices of the wrong shape.
[[nodiscard]] inline cache_result simulate_cache(const routing_trace& tr, std::size_t capacity, cache_policy policy,
                                                 const cache_options& opt = {}) {
    tr.validate();
    if (capacity == 0) MOE_THROW("moe.offload.capacity", "cache capacity must be >= 1 expert per layer");
    const std::size_t L = tr.num_layers, T = tr.num_tokens, E = tr.num_experts, k = tr.top_k;
    cache_result res;
    res.policy = policy;
    res.capacity = capacity;
    res.num_tokens = T;
    const std::vector<matrix<double>> own = (policy == cache_policy::prefetch && opt.transitions.empty()) ? transition_counts(tr)
                                                                                                            : std::vector<matrix<double>>{};
    const std::vector<matrix<double>>& trans = opt.transitions.empty() ? own : opt.transitions;
    if (policy == cache_policy::prefetch) {
        if (trans.size() + 1 != L && L > 0)
            MOE_THROW("moe.offload.transitions", "prefetch needs ", L - 1, " transition matrices, got ", trans.size());
        for (const auto& m : trans)
            if (m.rows != E || m.cols != E) MOE_THROW("moe.offload.transitions", "transition matrices must be ", E, " x ", E);
    }
    const std::size_t width = opt.prefetch_width ? opt.prefetch_width : k;
    constexpr std::size_t never = std::numeric_limits<std::size_t>::max();
    // Belady: per layer, per token, the next token (>= t) that uses each expert.
    std::vector<std::vector<std::size_t>> next_use;  // [L][T*E] lazily: next_use[l][t*E+e]
    if (policy == cache_policy::belady) {
        next_use.assign(L, std::vector<std::size_t>(T * E, never));
        for (std::size_t l = 0; l < L; ++l) {
            std::vector<std::size_t> nxt(E, never);
            for (std::size_t t = T; t-- > 0;) {
                for (std::size_t s = 0; s < k; ++s) {
                    const std::int32_t e = tr.at(l, t, s);
                    if (e >= 0) nxt[static_cast<std::size_t>(e)] = t;
                }
                std::copy(nxt.begin(), nxt.end(), next_use[l].begin() + static_cast<std::ptrdiff_t>(t * E));
            }
        }
    }
    // Per layer: resident flags, last use (for LRU), use counts (for LFU).
    std::vector<std::vector<char>> resident(L, std::vector<char>(E, 0));
    std::vector<std::vector<std::size_t>> last(L, std::vector<std::size_t>(E, 0)), freq(L, std::vector<std::size_t>(E, 0));
    std::vector<std::size_t> count(L, 0);
    std::size_t clock = 0;
    std::vector<char> pinned(E, 0);
    // Evicts one expert of layer l (not pinned) by the policy; false if all are pinned.
    auto evict = [&](std::size_t l, std::size_t t) {
        std::size_t victim = E;
        for (std::size_t e = 0; e < E; ++e) {
            if (!resident[l][e] || pinned[e]) continue;
            if (victim == E) {
                victim = e;
                continue;
            }
            bool better = false;
            switch (policy) {
                case cache_policy::lru:
                case cache_policy::prefetch: better = last[l][e] < last[l][victim]; break;
                case cache_policy::lfu:
                    better = freq[l][e] < freq[l][victim] || (freq[l][e] == freq[l][victim] && last[l][e] < last[l][victim]);
                    break;
                case cache_policy::belady: {
                    // Next use strictly after token t (the current token's uses are pinned).
                    const std::size_t ne = t + 1 < T ? next_use[l][(t + 1) * E + e] : never;
                    const std::size_t nv = t + 1 < T ? next_use[l][(t + 1) * E + victim] : never;
                    better = ne > nv;
                    break;
                }
            }
            if (better) victim = e;
        }
        if (victim == E) return false;
        resident[l][victim] = 0;
        --count[l];
        return true;
    };
    // Brings expert e of layer l into the cache, evicting by the policy; false when every
    // resident expert is pinned (capacity < the token's experts: e runs streamed, not kept).
    auto insert = [&](std::size_t l, std::size_t e, std::size_t t) {
        if (count[l] >= capacity && !evict(l, t)) return false;
        resident[l][e] = 1;
        ++count[l];
        last[l][e] = ++clock;
        return true;
    };
    std::vector<double> score(E);
    std::vector<std::size_t> order(E);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t l = 0; l < L; ++l) {
            std::fill(pinned.begin(), pinned.end(), 0);
            for (std::size_t s = 0; s < k; ++s)  // the token's experts are never evicted for each other
                if (tr.at(l, t, s) >= 0) pinned[static_cast<std::size_t>(tr.at(l, t, s))] = 1;
            for (std::size_t s = 0; s < k; ++s) {
                const std::int32_t se = tr.at(l, t, s);
                if (se < 0) continue;
                const auto e = static_cast<std::size_t>(se);
                ++res.accesses;
                ++freq[l][e];
                if (resident[l][e]) {
                    ++res.hits;
                    last[l][e] = ++clock;
                } else {
                    ++res.loads;  // moved in to run, kept if the cache has room
                    insert(l, e, t);
                }
            }
            if (policy == cache_policy::prefetch && l + 1 < L) {
                // Predict layer l+1's experts from this token's layer-l experts.
                std::fill(score.begin(), score.end(), 0.0);
                for (std::size_t s = 0; s < k; ++s) {
                    const std::int32_t a = tr.at(l, t, s);
                    if (a < 0) continue;
                    for (std::size_t b = 0; b < E; ++b) score[b] += trans[l](static_cast<std::size_t>(a), b);
                }
                std::iota(order.begin(), order.end(), std::size_t{0});
                std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return score[x] > score[y]; });
                std::fill(pinned.begin(), pinned.end(), 0);
                for (std::size_t i = 0; i < std::min(width, std::min(capacity, E)); ++i) {
                    const std::size_t b = order[i];
                    if (score[b] <= 0.0) break;
                    pinned[b] = 1;
                    if (resident[l + 1][b]) continue;
                    if (insert(l + 1, b, t)) {
                        ++res.loads;
                        ++res.prefetches;
                    }
                }
            }
        }
    return res;
}

}  // namespace moe
