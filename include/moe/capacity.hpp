/// @file capacity.hpp
/// Expert capacity: how many rows each expert accepts, by each peer's formula, with its exact
/// arithmetic (rounding and the floating-point type it computes in).
///
/// Drop policies, reroute and fill-in build on this (see the capacity issue); this header is
/// the formulas.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

#include "config.hpp"

namespace moe {

/// Named capacity formulas (T tokens, E experts, k slots per token, factor cf).
enum class capacity_formula {
    megatron,        ///< ceil((T*k / E) * cf) in double; then max(., min_capacity). Megatron's
                     ///< get_capacity(num_tokens = T*k): a capacity above T never binds.
    deepspeed,       ///< ceil(float32(k * T / E) * float32(cf)); then max(., min_capacity).
                     ///< DeepSpeed _capacity (top2gating passes cf * 2, topkgating k).
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
        case capacity_formula::tutel: return "tutel";
        case capacity_formula::megablocks: return "megablocks";
        case capacity_formula::capacity_aware: return "capacity_aware";
        case capacity_formula::dropless: return "dropless";
    }
    return "?";
}

/// Parses a formula name (as to_string writes it); throws [moe.capacity.formula].
[[nodiscard]] inline capacity_formula parse_capacity_formula(const std::string& s) {
    for (auto f : {capacity_formula::megatron, capacity_formula::deepspeed, capacity_formula::tutel,
                   capacity_formula::megablocks, capacity_formula::capacity_aware, capacity_formula::dropless})
        if (s == to_string(f)) return f;
    MOE_THROW("moe.capacity.formula", "unknown capacity formula '", s,
              "' (expected megatron, deepspeed, tutel, megablocks, capacity_aware or dropless)");
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
/// dropless cases (dropless; tutel with factor <= 0; megablocks giving 0).
[[nodiscard]] inline std::size_t expert_capacity(const capacity_config& c, std::size_t num_tokens,
                                                 std::size_t num_experts, std::size_t top_k, std::size_t max_load) {
    c.validate();
    if (num_experts == 0) MOE_THROW("moe.capacity.shape", "num_experts=0");
    if (top_k == 0) MOE_THROW("moe.capacity.shape", "top_k=0");
    const double T = static_cast<double>(num_tokens), E = static_cast<double>(num_experts),
                 k = static_cast<double>(top_k);
    auto at_least_min = [&](double v) { return std::max(static_cast<std::size_t>(v), c.min_capacity); };
    switch (c.formula) {
        case capacity_formula::megatron: return at_least_min(std::ceil((T * k / E) * c.factor));
        case capacity_formula::deepspeed: {
            const float prod = static_cast<float>(k * (T / E)) * static_cast<float>(c.factor);
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

}  // namespace moe
