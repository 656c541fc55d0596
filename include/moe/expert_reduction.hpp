/// @file expert_reduction.hpp
/// Fewer active experts at run time, on a routing already computed: smart expert reduction
/// (ik_llama.cpp's `-ser Kmin,t`) and a per-call top-k below the recipe's. Both keep the router's
/// semantics for what stays: the kept experts are weighed as the router weighs a top-k of that
/// many experts (replay.hpp's `reweigh`: softmax over the kept logits, renormalisation and
/// scaling as the recipe does).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "config.hpp"
#include "executor.hpp"
#include "replay.hpp"
#include "router.hpp"
#include "routing.hpp"
#include "tensor.hpp"

namespace moe {

/// Smart expert reduction: keep each token's first `k_min` slots and, of the others, those whose
/// weight is at least `threshold` x the token's largest weight. k_min = 0: off.
struct ser_config {
    std::size_t k_min = 0;
    double threshold = 0.0;

    [[nodiscard]] bool active() const noexcept { return k_min > 0; }
    /// Throws [moe.selection.ser] unless 1 <= k_min <= top_k and 0 <= threshold <= 1.
    void validate(std::size_t top_k) const {
        if (k_min == 0 || k_min > top_k) MOE_THROW("moe.selection.ser", "k_min=", k_min, " must be in [1, top_k=", top_k, "]");
        if (!(threshold >= 0.0 && threshold <= 1.0)) MOE_THROW("moe.selection.ser", "threshold=", threshold, " must be in [0, 1]");
    }
};

/// Applies `ser` in place to `r`, the routing of `logits` with `cfg`: the slots it drops become
/// empty (-1, weight 0) and the kept ones move to the front in their order; the kept experts are
/// then weighed as a top-k of that many (reweigh). Returns the number of slots dropped.
/// Throws [moe.selection.ser] and reweigh's errors.
template <class Arch = default_arch, class T, class Executor = serial_executor>
std::size_t reduce_experts(routing<compute_t<T>>& r, matrix_view<const T> logits, const router_config& cfg, const ser_config& ser,
                           replay_workspace<compute_t<T>>& ws, Executor&& exec = {}) {
    using C = compute_t<T>;
    ser.validate(r.top_k);
    const std::size_t k = r.top_k;
    std::size_t dropped = 0;
    for (std::size_t t = 0; t < r.num_tokens; ++t) {
        std::int32_t* idx = r.indices.data() + t * k;
        C* w = r.weights.data() + t * k;
        C top = C(0);
        bool any = false;
        for (std::size_t s = 0; s < k; ++s)
            if (idx[s] >= 0 && (!any || w[s] > top)) {
                top = w[s];
                any = true;
            }
        const double cut = ser.threshold * static_cast<double>(top);
        std::size_t n = 0, seen = 0;
        for (std::size_t s = 0; s < k; ++s) {
            if (idx[s] < 0) continue;
            const bool keep = seen < ser.k_min || static_cast<double>(w[s]) >= cut;
            ++seen;
            if (!keep) {
                ++dropped;
                continue;
            }
            idx[n] = idx[s];
            w[n] = w[s];
            ++n;
        }
        for (std::size_t s = n; s < k; ++s) {
            idx[s] = -1;
            w[s] = C(0);
        }
    }
    if (dropped > 0) reweigh<Arch>(r, logits, cfg, ws, exec);
    return dropped;
}

/// `cfg` with top_k = k, for a call that routes fewer experts than the recipe.
/// Throws [moe.router.top_k] when k is 0 or above the recipe's k.
[[nodiscard]] inline router_config with_top_k(router_config cfg, std::size_t k) {
    if (k == 0 || k > cfg.top_k) MOE_THROW("moe.router.top_k", "top_k=", k, " must be in [1, the recipe's k=", cfg.top_k, "]");
    cfg.top_k = k;
    return cfg;
}

}  // namespace moe
