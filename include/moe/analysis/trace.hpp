/// @file analysis/trace.hpp
/// Multi-layer routing traces: the experts each token picked in each of L consecutive MoE
/// layers ([L, T, k] indices, the stack of what HF models return with
/// `output_router_logits=True` after top-k), their per-layer loads, the layer-to-layer
/// transition counts (ExFlow's P(e_{l+1} | e_l)), and a generator of synthetic traces with
/// correlated layers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../io/npy.hpp"
#include "../router.hpp"
#include "synthetic.hpp"
#include "../tensor.hpp"

namespace moe {

/// A routing trace: indices [L x T x k] (row-major), -1 = an empty slot (dynamic k, drops).
struct routing_trace {
    std::size_t num_layers = 0, num_tokens = 0, num_experts = 0, top_k = 0;
    std::vector<std::int32_t> indices;

    routing_trace() = default;
    routing_trace(std::size_t L, std::size_t T, std::size_t E, std::size_t k)
        : num_layers(L), num_tokens(T), num_experts(E), top_k(k), indices(L * T * k, -1) {}

    [[nodiscard]] std::int32_t at(std::size_t l, std::size_t t, std::size_t s) const noexcept {
        return indices[(l * num_tokens + t) * top_k + s];
    }
    [[nodiscard]] std::int32_t& at(std::size_t l, std::size_t t, std::size_t s) noexcept {
        return indices[(l * num_tokens + t) * top_k + s];
    }
    /// Throws [moe.trace.index] for an index outside [-1, E) and [moe.trace.shape] for a size
    /// mismatch.
    void validate() const {
        if (indices.size() != num_layers * num_tokens * top_k)
            MOE_THROW("moe.trace.shape", "trace holds ", indices.size(), " indices, expected L*T*k = ", num_layers, "*", num_tokens, "*",
                      top_k);
        if (num_experts == 0) MOE_THROW("moe.trace.shape", "num_experts=0");
        for (std::size_t i = 0; i < indices.size(); ++i)
            if (indices[i] < -1 || indices[i] >= static_cast<std::int32_t>(num_experts)) {
                const std::size_t l = i / (num_tokens * top_k), t = (i / top_k) % num_tokens;
                MOE_THROW("moe.trace.index", "layer ", l, ", token ", t, " holds expert ", indices[i], ", outside [-1, ", num_experts, ")");
            }
    }
    /// Layer l as a routing (unit weights).
    [[nodiscard]] routing<float> layer(std::size_t l) const {
        routing<float> r(num_tokens, num_experts, top_k, false);
        std::copy(indices.begin() + static_cast<std::ptrdiff_t>(l * num_tokens * top_k),
                  indices.begin() + static_cast<std::ptrdiff_t>((l + 1) * num_tokens * top_k), r.indices.begin());
        std::fill(r.weights.begin(), r.weights.end(), 1.0f);
        return r;
    }
};

/// The trace of routing each layer's logits [L x T x E] (row-major) with `cfg`.
template <class T>
[[nodiscard]] routing_trace trace_from_logits(const T* logits, std::size_t L, std::size_t tokens, std::size_t E, const router_config& cfg) {
    cfg.validate(E);
    routing_trace tr(L, tokens, E, cfg.top_k);
    for (std::size_t l = 0; l < L; ++l) {
        const auto r = route(matrix_view<const T>(logits + l * tokens * E, tokens, E), cfg);
        std::copy(r.indices.begin(), r.indices.end(), tr.indices.begin() + static_cast<std::ptrdiff_t>(l * tokens * cfg.top_k));
    }
    return tr;
}

/// Reads a trace from .npy: [L, T, E] router logits (float16 / float32 / float64, routed
/// layer by layer with `cfg`) or [L, T, k] expert indices (int32 / int64, -1 = empty); a 2-D
/// array is one layer. `num_experts` sizes an index trace (0: the largest index + 1).
/// Throws the .npy reader's errors, [moe.trace.shape] and [moe.trace.index].
[[nodiscard]] inline routing_trace read_trace(const std::string& path, const router_config& cfg, std::size_t num_experts = 0) {
    const io::npy_array a = io::read_npy(path);
    if (a.shape.size() != 2 && a.shape.size() != 3)
        MOE_THROW("moe.trace.shape", path, ": expected [L, T, E] logits or [L, T, k] indices, got shape ", io::shape_string(a.shape));
    const std::size_t L = a.shape.size() == 3 ? a.shape[0] : 1, T = a.shape[a.shape.size() - 2], last = a.shape.back();
    if (L == 0 || T == 0 || last == 0) MOE_THROW("moe.trace.shape", path, ": empty trace, shape ", io::shape_string(a.shape));
    if (a.descr[1] == 'f') {
        const std::vector<float> logits = io::npy_values<float>(a, path);
        return trace_from_logits(logits.data(), L, T, last, cfg);
    }
    const std::vector<std::int64_t> v = io::npy_values<std::int64_t>(a, path);
    std::int64_t hi = -1;
    std::size_t at_hi = 0;
    for (std::size_t i = 0; i < v.size(); ++i)
        if (v[i] > hi) {
            hi = v[i];
            at_hi = i;
        }
    if (!num_experts && hi >= std::numeric_limits<std::int32_t>::max())  // hi + 1 experts: not an int32 id (nor, at 2^63 - 1, an int64)
        MOE_THROW("moe.trace.index", path, ": index ", hi, " at position ", at_hi, " is outside the int32 expert ids");
    routing_trace tr(L, T, num_experts ? num_experts : static_cast<std::size_t>(std::max<std::int64_t>(hi + 1, 1)), last);
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] < -1 || v[i] >= static_cast<std::int64_t>(tr.num_experts))
            MOE_THROW("moe.trace.index", path, ": index ", v[i], " at position ", i, " is outside [-1, ", tr.num_experts, ")");
        tr.indices[i] = static_cast<std::int32_t>(v[i]);
    }
    return tr;
}

/// Routed slots per expert per layer, [L x E] (the loads EPLB takes).
[[nodiscard]] inline matrix<float> layer_loads(const routing_trace& tr) {
    matrix<float> loads(tr.num_layers, tr.num_experts);
    for (std::size_t l = 0; l < tr.num_layers; ++l)
        for (std::size_t t = 0; t < tr.num_tokens; ++t)
            for (std::size_t s = 0; s < tr.top_k; ++s) {
                const std::int32_t e = tr.at(l, t, s);
                if (e >= 0) loads(l, static_cast<std::size_t>(e)) += 1.0f;
            }
    return loads;
}

/// Layer-to-layer transition counts: counts[l](a, b) = tokens with expert a among their
/// layer-l experts and b among their layer-(l+1) experts (L - 1 matrices, E x E).
/// Row-normalised, they are ExFlow's P(e_{l+1} = b | e_l = a).
[[nodiscard]] inline std::vector<matrix<double>> transition_counts(const routing_trace& tr) {
    std::vector<matrix<double>> c;
    const std::size_t E = tr.num_experts;
    for (std::size_t l = 0; l + 1 < tr.num_layers; ++l) {
        matrix<double> m(E, E);
        for (std::size_t t = 0; t < tr.num_tokens; ++t)
            for (std::size_t s = 0; s < tr.top_k; ++s) {
                const std::int32_t a = tr.at(l, t, s);
                if (a < 0) continue;
                for (std::size_t u = 0; u < tr.top_k; ++u) {
                    const std::int32_t b = tr.at(l + 1, t, u);
                    if (b >= 0) m(static_cast<std::size_t>(a), static_cast<std::size_t>(b)) += 1.0;
                }
            }
        c.push_back(std::move(m));
    }
    return c;
}

/// Synthetic trace with correlated layers: layer 0 routes seeded logits with the popularity
/// `skew`; in each later layer, a token's logits get `affinity` added at the images of its
/// previous-layer experts under a fixed random permutation of the experts (one per layer
/// pair), so each token's experts in layer l+1 are drawn near its experts in layer l.
/// affinity 0 gives independent layers; ~4 makes most of a token's next experts predictable.
[[nodiscard]] inline routing_trace synthetic_trace(std::size_t L, std::size_t T, std::size_t E, std::size_t k, double affinity,
                                                   const skew& popularity = {}, std::uint64_t seed = 0) {
    if (L == 0 || T == 0) MOE_THROW("moe.trace.shape", "a trace needs at least one layer and one token (L=", L, ", T=", T, ")");
    router_config cfg;  // softmax over all experts, top-k, renormalised
    cfg.top_k = k;
    cfg.renorm = renormalize::sum;
    cfg.validate(E);
    routing_trace tr(L, T, E, k);
    for (std::size_t l = 0; l < L; ++l) {
        matrix<float> logits = synthetic_logits(T, E, popularity, seed + 0x9E37ull * (l + 1));
        if (l > 0) {
            std::vector<std::size_t> perm(E);
            std::iota(perm.begin(), perm.end(), std::size_t{0});
            splitmix64 rng(seed ^ (0xC0FFEEull + l));
            for (std::size_t i = E; i > 1; --i) std::swap(perm[i - 1], perm[static_cast<std::size_t>(rng.next() % i)]);
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t s = 0; s < k; ++s) {
                    const std::int32_t prev = tr.at(l - 1, t, s);
                    if (prev >= 0) logits(t, perm[static_cast<std::size_t>(prev)]) += static_cast<float>(affinity);
                }
        }
        const auto r = route(logits, cfg);
        std::copy(r.indices.begin(), r.indices.end(), tr.indices.begin() + static_cast<std::ptrdiff_t>(l * T * k));
    }
    return tr;
}

}  // namespace moe
