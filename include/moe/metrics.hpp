/// @file metrics.hpp
/// Load metrics of a routing (after capacity, if applied) and of its dispatch plan: what a
/// policy benchmarker compares. Pure functions of their inputs.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

#include "capacity.hpp"
#include "dispatch.hpp"
#include "routing.hpp"

namespace moe {

struct load_metrics {
    std::vector<std::size_t> load;  ///< routed slots per expert
    double mean_load = 0;           ///< routed slots / experts
    std::size_t max_load = 0;
    double max_over_mean = 0;       ///< the straggler ratio: the busiest expert sets the latency
    double cv = 0;                  ///< coefficient of variation of the loads (population std / mean)
    std::size_t routed = 0;         ///< slots with an expert
    std::size_t dropped = 0;        ///< slots dropped by capacity (from the report)
    double drop_rate = 0;           ///< dropped / (routed + dropped)
    /// Dropped slots by the token's position decile in the batch (OpenMoE's
    /// "drop towards the end": later tokens lose more under position-based policies).
    std::array<std::size_t, 10> drops_by_decile{};
    double padding_fraction = 0;    ///< padding rows / all rows of the plan (0 without one)
};

/// Routed slots on each device under an expert -> device placement (devices 0 .. max).
/// Throws [moe.capacity.placement] when the placement does not map every expert.
template <class W>
[[nodiscard]] std::vector<std::size_t> device_loads(const routing<W>& r, const std::vector<std::int32_t>& placement) {
    if (placement.size() != r.num_experts)
        MOE_THROW("moe.capacity.placement", "placement maps ", placement.size(), " experts, expected num_experts=", r.num_experts);
    std::int32_t devices = 0;
    for (std::int32_t d : placement) {
        if (d < 0) MOE_THROW("moe.capacity.placement", "placement holds device ", d, " (devices are >= 0)");
        devices = std::max(devices, d + 1);
    }
    std::vector<std::size_t> load(static_cast<std::size_t>(devices), 0);
    const auto per_expert = r.tokens_per_expert();
    for (std::size_t e = 0; e < r.num_experts; ++e) load[static_cast<std::size_t>(placement[e])] += per_expert[e];
    return load;
}

/// Metrics of `r`; `report` adds the drops, `plan` the padding waste.
template <class W>
[[nodiscard]] load_metrics measure(const routing<W>& r, const capacity_report* report = nullptr,
                                   const dispatch_plan* plan = nullptr) {
    load_metrics m;
    m.load = r.tokens_per_expert();
    const std::size_t E = r.num_experts;
    for (std::size_t c : m.load) m.routed += c;
    if (E > 0) {
        m.mean_load = static_cast<double>(m.routed) / static_cast<double>(E);
        m.max_load = *std::max_element(m.load.begin(), m.load.end());
        double var = 0;
        for (std::size_t c : m.load) var += (static_cast<double>(c) - m.mean_load) * (static_cast<double>(c) - m.mean_load);
        var /= static_cast<double>(E);
        m.max_over_mean = m.mean_load > 0 ? static_cast<double>(m.max_load) / m.mean_load : 0.0;
        m.cv = m.mean_load > 0 ? std::sqrt(var) / m.mean_load : 0.0;
    }
    if (report) {
        m.dropped = report->dropped.size();
        const std::size_t total = m.routed + m.dropped;
        m.drop_rate = total ? static_cast<double>(m.dropped) / static_cast<double>(total) : 0.0;
        for (std::int32_t i : report->dropped) {
            const std::size_t t = static_cast<std::size_t>(i) / r.top_k;
            ++m.drops_by_decile[std::min<std::size_t>(9, t * 10 / std::max<std::size_t>(1, r.num_tokens))];
        }
    }
    if (plan) m.padding_fraction = plan->padding_fraction();
    return m;
}

}  // namespace moe
