/// @file routing.hpp
/// The router's output value type, `routing<W>`, and `compute_t`: the bottom of the flow that
/// the gate, router, capacity, dispatch, losses and metrics share (see docs/architecture.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "config.hpp"

namespace moe {

/// The type weights and scores are computed in: float64 for double logits, float32 for float,
/// Eigen::bfloat16 and Eigen::half.
template <class T>
using compute_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

/// The router's output: for each token, k slots of (expert index, weight), ordered by the
/// selection key (descending; ties: lower expert index first). Index -1 marks an empty slot
/// (weight 0); later stages (capacity, dynamic k) use it, the fixed top-k router never does.
/// @tparam W weight type (float, or double for double logits)
template <class W = float>
struct routing {
    std::size_t num_tokens = 0;
    std::size_t num_experts = 0;
    std::size_t top_k = 0;
    std::vector<std::int32_t> indices;  ///< num_tokens x top_k
    std::vector<W> weights;             ///< num_tokens x top_k
    std::vector<W> scores;              ///< num_tokens x num_experts, or empty (keep_scores = false)

    routing() = default;
    routing(std::size_t t, std::size_t e, std::size_t k, bool with_scores)
        : num_tokens(t), num_experts(e), top_k(k), indices(t * k, -1), weights(t * k, W(0)),
          scores(with_scores ? t * e : 0, W(0)) {}

    [[nodiscard]] std::int32_t index(std::size_t t, std::size_t s) const noexcept { return indices[t * top_k + s]; }
    [[nodiscard]] W weight(std::size_t t, std::size_t s) const noexcept { return weights[t * top_k + s]; }
    [[nodiscard]] W score(std::size_t t, std::size_t e) const noexcept { return scores[t * num_experts + e]; }

    /// Number of slots routed to each expert.
    [[nodiscard]] std::vector<std::size_t> tokens_per_expert() const {
        std::vector<std::size_t> n(num_experts, 0);
        for (std::int32_t i : indices)
            if (i >= 0) ++n[static_cast<std::size_t>(i)];
        return n;
    }
};

/// Un-routes the tokens whose `valid` entry is 0 (padding tokens of a batch): all their slots
/// become -1 with weight 0, so capacity, dispatch and metrics never see them. Throws
/// [moe.router.mask] when the mask's length is not the number of tokens.
template <class W, class Mask>
void mask_tokens(routing<W>& r, const Mask& valid) {
    if (static_cast<std::size_t>(valid.size()) != r.num_tokens)
        MOE_THROW("moe.router.mask", "mask has ", valid.size(), " entries, expected num_tokens=", r.num_tokens);
    for (std::size_t t = 0; t < r.num_tokens; ++t)
        if (!valid[t])
            for (std::size_t s = 0; s < r.top_k; ++s) {
                r.indices[t * r.top_k + s] = -1;
                r.weights[t * r.top_k + s] = W(0);
            }
}

}  // namespace moe
