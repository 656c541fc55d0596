/// @file placement.hpp
/// Where experts live: replicated placements (DeepSeek EPLB), routings over physical experts
/// (each slot sent to one replica of its logical expert), device loads and cross-device traffic.
///
/// Conventions are EPLB's (deepseek-ai/EPLB, used by SGLang and vLLM): P physical experts
/// ("replicas") over D devices, device d holding physical experts [d P/D, (d+1) P/D);
/// `phy2log[p]` the logical expert physical expert p runs, `phyrank[p]` which replica of it
/// p is, `logcnt[e]` how many replicas logical expert e has, `log2phy[e][r]` the physical
/// expert of replica r (-1 padded to the largest replica count). Each layer is independent.
///
/// Across layers (ExFlow, MoETuner): a token whose consecutive layers' experts sit on one
/// device stays there; `affinity_placement` places each layer's experts to keep the frequent
/// layer-to-layer transitions on one device, and `transition_traffic` counts what crosses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "config.hpp"
#include "routing.hpp"
#include "tensor.hpp"
#include "analysis/trace.hpp"

namespace moe {

/// A replicated placement of L layers' experts (row-major [L x P], [L x E], [L x E x R]).
struct replica_placement {
    std::size_t num_layers = 0, num_logical = 0, num_physical = 0, num_devices = 0;
    std::size_t max_replicas = 0;       ///< R: the largest replica count of any expert
    std::vector<std::int32_t> phy2log;  ///< [L x P]
    std::vector<std::int32_t> phyrank;  ///< [L x P]
    std::vector<std::int32_t> logcnt;   ///< [L x E]
    std::vector<std::int32_t> log2phy;  ///< [L x E x R], -1 padded

    [[nodiscard]] std::size_t experts_per_device() const noexcept { return num_devices ? num_physical / num_devices : 0; }
    /// The device of physical expert p.
    [[nodiscard]] std::int32_t device_of(std::size_t p) const noexcept {
        return static_cast<std::int32_t>(p / experts_per_device());
    }
    /// Device of each physical expert: the `placement` vector device_loads and capacity take.
    [[nodiscard]] std::vector<std::int32_t> physical_devices() const {
        std::vector<std::int32_t> d(num_physical);
        for (std::size_t p = 0; p < num_physical; ++p) d[p] = device_of(p);
        return d;
    }
    [[nodiscard]] std::int32_t replicas(std::size_t layer, std::size_t e) const { return logcnt[layer * num_logical + e]; }
    [[nodiscard]] std::int32_t physical(std::size_t layer, std::size_t e, std::size_t r) const {
        return log2phy[(layer * num_logical + e) * max_replicas + r];
    }
    /// Throws [moe.placement.layer] for a layer past the placement's.
    void check_layer(std::size_t layer) const {
        if (layer >= num_layers) MOE_THROW("moe.placement.layer", "layer ", layer, " is past the placement's ", num_layers, " layers");
    }
};

namespace detail {

/// EPLB balanced_packing of one row: n weighted items into m packs of exactly n / m items;
/// heaviest first (ties: lower index), each into the lightest pack that has room (ties: lower
/// pack). Pack weights add up in float32, as EPLB's tensors do.
inline void balanced_packing(const float* w, std::size_t n, std::size_t m, std::int32_t* pack, std::int32_t* rank) {
    const std::size_t per = n / m;
    if (per == 1) {
        for (std::size_t i = 0; i < n; ++i) {
            pack[i] = static_cast<std::int32_t>(i);
            rank[i] = 0;
        }
        return;
    }
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return w[a] > w[b]; });
    std::vector<float> weight(m, 0.0f);
    std::vector<std::size_t> items(m, 0);
    for (std::size_t i : order) {
        std::size_t best = m;
        for (std::size_t p = 0; p < m; ++p)
            if (items[p] < per && (best == m || weight[p] < weight[best])) best = p;
        pack[i] = static_cast<std::int32_t>(best);
        rank[i] = static_cast<std::int32_t>(items[best]);
        weight[best] += w[i];
        ++items[best];
    }
}

/// EPLB replicate_experts of one row: n logical experts onto `phys` >= n physical ones; each
/// extra replica goes to the expert with the largest load per replica (float32 division;
/// ties: lower index).
inline void replicate_experts(const float* w, std::size_t n, std::size_t phys, std::int32_t* phy2log, std::int32_t* rank,
                              std::int32_t* cnt) {
    for (std::size_t i = 0; i < n; ++i) {
        phy2log[i] = static_cast<std::int32_t>(i);
        rank[i] = 0;
        cnt[i] = 1;
    }
    for (std::size_t i = n; i < phys; ++i) {
        std::size_t best = 0;
        float best_v = w[0] / static_cast<float>(cnt[0]);
        for (std::size_t j = 1; j < n; ++j) {
            const float v = w[j] / static_cast<float>(cnt[j]);
            if (v > best_v) {
                best_v = v;
                best = j;
            }
        }
        phy2log[i] = static_cast<std::int32_t>(best);
        rank[i] = cnt[best];
        ++cnt[best];
    }
}

inline std::vector<std::int32_t> inverse_permutation(const std::vector<std::int32_t>& perm) {
    std::vector<std::int32_t> inv(perm.size());
    for (std::size_t i = 0; i < perm.size(); ++i) inv[static_cast<std::size_t>(perm[i])] = static_cast<std::int32_t>(i);
    return inv;
}

/// EPLB rebalance_experts_hierarchical for one layer: groups packed onto nodes, experts
/// replicated within each node, replicas packed onto the node's devices.
inline void eplb_layer(const float* w, std::size_t E, std::size_t P, std::size_t G, std::size_t N, std::size_t D,
                       std::int32_t* out_phy2log, std::int32_t* out_phyrank, std::int32_t* out_logcnt) {
    const std::size_t group_size = E / G, groups_per_node = G / N, per_device = P / D;
    const std::size_t E_node = E / N, P_node = P / N, D_node = D / N;
    // Step 1: groups onto nodes.
    std::vector<float> group_w(G, 0.0f);
    for (std::size_t g = 0; g < G; ++g)
        for (std::size_t j = 0; j < group_size; ++j) group_w[g] += w[g * group_size + j];
    std::vector<std::int32_t> gpack(G), grank(G);
    balanced_packing(group_w.data(), G, N, gpack.data(), grank.data());
    std::vector<std::int32_t> log2mlog(E);
    for (std::size_t g = 0; g < G; ++g)
        for (std::size_t j = 0; j < group_size; ++j)
            log2mlog[g * group_size + j] =
                static_cast<std::int32_t>((static_cast<std::size_t>(gpack[g]) * groups_per_node + static_cast<std::size_t>(grank[g])) * group_size + j);
    const std::vector<std::int32_t> mlog2log = inverse_permutation(log2mlog);
    // Steps 2 and 3, node by node.
    std::vector<std::int32_t> mlogcnt(E);
    std::vector<float> node_w(E_node), phy_w(P_node);
    std::vector<std::int32_t> phy2mlog(P_node), phyrank(P_node), pack(P_node), rank(P_node), phy2pphy(P_node);
    for (std::size_t n = 0; n < N; ++n) {
        for (std::size_t i = 0; i < E_node; ++i) node_w[i] = w[mlog2log[n * E_node + i]];
        std::int32_t* cnt = mlogcnt.data() + n * E_node;
        replicate_experts(node_w.data(), E_node, P_node, phy2mlog.data(), phyrank.data(), cnt);
        for (std::size_t p = 0; p < P_node; ++p) {
            const auto m = static_cast<std::size_t>(phy2mlog[p]);
            phy_w[p] = node_w[m] / static_cast<float>(cnt[m]);
        }
        balanced_packing(phy_w.data(), P_node, D_node, pack.data(), rank.data());
        for (std::size_t p = 0; p < P_node; ++p)
            phy2pphy[p] = static_cast<std::int32_t>(static_cast<std::size_t>(pack[p]) * per_device + static_cast<std::size_t>(rank[p]));
        const std::vector<std::int32_t> pphy2phy = inverse_permutation(phy2pphy);
        for (std::size_t q = 0; q < P_node; ++q) {
            const auto p = static_cast<std::size_t>(pphy2phy[q]);
            const std::size_t mlog = static_cast<std::size_t>(phy2mlog[p]) + n * E_node;
            out_phy2log[n * P_node + q] = mlog2log[mlog];
            out_phyrank[n * P_node + q] = phyrank[p];
        }
    }
    for (std::size_t e = 0; e < E; ++e) out_logcnt[e] = mlogcnt[static_cast<std::size_t>(log2mlog[e])];
}

}  // namespace detail

/// DeepSeek EPLB: replicates hot experts and packs the replicas onto devices, layer by layer.
/// Hierarchical (groups onto nodes, then replicas within nodes) when `num_groups` divides
/// evenly over `num_nodes`, global (one group, one node) otherwise; EPLB's algorithm step for
/// step, with its float32 arithmetic. Ties, which EPLB leaves to torch's unstable sort, go to
/// the lower index.
/// @param loads        [L x E] expert loads (tokens per expert per layer), finite and >= 0
/// @param num_replicas P physical experts per layer (>= E, a multiple of num_devices)
/// Throws [moe.placement.loads], [moe.placement.replicas], [moe.placement.groups],
/// [moe.placement.devices].
[[nodiscard]] inline replica_placement rebalance_experts(matrix_view<const float> loads, std::size_t num_replicas,
                                                         std::size_t num_groups, std::size_t num_nodes, std::size_t num_devices) {
    const std::size_t L = loads.rows, E = loads.cols, P = num_replicas;
    if (E == 0) MOE_THROW("moe.placement.loads", "loads have no expert column");
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t e = 0; e < E; ++e)
            if (!(loads(l, e) >= 0.0f) || !std::isfinite(loads(l, e)))
                MOE_THROW("moe.placement.loads", "load of layer ", l, ", expert ", e, " is ", loads(l, e), " (loads are finite and >= 0)");
    if (P < E) MOE_THROW("moe.placement.replicas", "num_replicas=", P, " is fewer than the ", E, " experts (each needs one)");
    if (num_devices == 0 || P % num_devices != 0)
        MOE_THROW("moe.placement.devices", "num_replicas=", P, " must be a positive multiple of num_devices=", num_devices);
    if (num_groups == 0) MOE_THROW("moe.placement.groups", "num_groups=0 (1 = no groups)");
    if (num_nodes == 0) MOE_THROW("moe.placement.devices", "num_nodes=0");
    std::size_t G = num_groups, N = num_nodes;
    if (G % N != 0) G = N = 1;  // EPLB's global policy: groups play no part
    if (E % G != 0) MOE_THROW("moe.placement.groups", "num_groups=", num_groups, " does not divide the ", E, " experts");
    if (num_devices % N != 0)
        MOE_THROW("moe.placement.devices", "num_devices=", num_devices, " is not a multiple of num_nodes=", N);
    replica_placement out;
    out.num_layers = L;
    out.num_logical = E;
    out.num_physical = P;
    out.num_devices = num_devices;
    out.phy2log.assign(L * P, 0);
    out.phyrank.assign(L * P, 0);
    out.logcnt.assign(L * E, 0);
    for (std::size_t l = 0; l < L; ++l)
        detail::eplb_layer(loads.row(l), E, P, G, N, num_devices, out.phy2log.data() + l * P, out.phyrank.data() + l * P,
                           out.logcnt.data() + l * E);
    std::int32_t R = 0;
    for (std::int32_t c : out.logcnt) R = std::max(R, c);
    out.max_replicas = static_cast<std::size_t>(R);
    out.log2phy.assign(L * E * out.max_replicas, -1);
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t p = 0; p < P; ++p) {
            const auto e = static_cast<std::size_t>(out.phy2log[l * P + p]);
            out.log2phy[(l * E + e) * out.max_replicas + static_cast<std::size_t>(out.phyrank[l * P + p])] = static_cast<std::int32_t>(p);
        }
    return out;
}

/// One replica per expert, experts in order, E / D per device (the placement without EPLB).
/// Throws [moe.placement.devices] when D does not divide E.
[[nodiscard]] inline replica_placement contiguous_placement(std::size_t num_layers, std::size_t num_experts, std::size_t num_devices) {
    if (num_devices == 0 || num_experts % num_devices != 0)
        MOE_THROW("moe.placement.devices", "num_devices=", num_devices, " does not divide the ", num_experts, " experts");
    replica_placement out;
    out.num_layers = num_layers;
    out.num_logical = out.num_physical = num_experts;
    out.num_devices = num_devices;
    out.max_replicas = 1;
    out.phy2log.resize(num_layers * num_experts);
    for (std::size_t l = 0; l < num_layers; ++l)
        for (std::size_t e = 0; e < num_experts; ++e) out.phy2log[l * num_experts + e] = static_cast<std::int32_t>(e);
    out.phyrank.assign(num_layers * num_experts, 0);
    out.logcnt.assign(num_layers * num_experts, 1);
    out.log2phy = out.phy2log;
    return out;
}

/// How a slot picks among its expert's replicas.
enum class replica_policy {
    round_robin,  ///< replica t mod (replica count) for token t: stateless, any token alone
    least_loaded  ///< the replica on the device with the fewest slots so far, in token order
                  ///< (ties: the lower replica rank): balances devices, not only replicas
};

[[nodiscard]] inline replica_policy parse_replica_policy(const std::string& s) {
    if (s == "round_robin") return replica_policy::round_robin;
    if (s == "least_loaded") return replica_policy::least_loaded;
    MOE_THROW("moe.placement.policy", "unknown replica policy '", s, "' (expected round_robin or least_loaded)");
}

/// The routing over physical experts: each routed slot of `r` (over logical experts) sent to
/// one replica of its expert in layer `layer` of `p`. Weights are kept; kept scores are copied
/// to every replica of an expert, so capacity's score and reroute policies see them. Empty
/// slots stay empty. Throws [moe.placement.routing] when r's experts are not p's.
template <class W>
[[nodiscard]] routing<W> to_physical(const routing<W>& r, const replica_placement& p, std::size_t layer = 0,
                                     replica_policy policy = replica_policy::round_robin) {
    p.check_layer(layer);
    if (r.num_experts != p.num_logical)
        MOE_THROW("moe.placement.routing", "routing has ", r.num_experts, " experts, the placement ", p.num_logical, " logical ones");
    routing<W> out(r.num_tokens, p.num_physical, r.top_k, !r.scores.empty());
    out.weights = r.weights;
    std::vector<std::size_t> device_used(p.num_devices, 0);
    for (std::size_t t = 0; t < r.num_tokens; ++t)
        for (std::size_t s = 0; s < r.top_k; ++s) {
            const std::int32_t e = r.index(t, s);
            if (e < 0) {
                out.indices[t * r.top_k + s] = -1;
                continue;
            }
            const auto ue = static_cast<std::size_t>(e);
            const auto cnt = static_cast<std::size_t>(p.replicas(layer, ue));
            std::size_t rep = 0;
            if (policy == replica_policy::round_robin) {
                rep = t % cnt;
            } else {
                auto load_of = [&](std::size_t c) {
                    return device_used[static_cast<std::size_t>(p.device_of(static_cast<std::size_t>(p.physical(layer, ue, c))))];
                };
                for (std::size_t c = 1; c < cnt; ++c)
                    if (load_of(c) < load_of(rep)) rep = c;
            }
            const std::int32_t phys = p.physical(layer, ue, rep);
            ++device_used[static_cast<std::size_t>(p.device_of(static_cast<std::size_t>(phys)))];
            out.indices[t * r.top_k + s] = phys;
        }
    if (!r.scores.empty())
        for (std::size_t t = 0; t < r.num_tokens; ++t)
            for (std::size_t q = 0; q < p.num_physical; ++q)
                out.scores[t * p.num_physical + q] = r.scores[t * r.num_experts + static_cast<std::size_t>(p.phy2log[layer * p.num_physical + q])];
    return out;
}

/// Traffic of one forward under a placement: tokens live on devices in contiguous shards
/// (token t on device t * D / T, as each EP rank holds its own batch); each routed slot whose
/// expert is on another device sends the token's row there and its output back.
struct traffic_report {
    std::size_t num_devices = 0;
    std::vector<std::size_t> device_load;  ///< routed slots computed on each device
    std::vector<std::size_t> sent;         ///< rows each device sends to others (dispatch)
    std::vector<std::size_t> received;     ///< rows each device receives from others
    std::size_t cross_rows = 0;            ///< slots whose expert is off the token's device
    std::size_t local_rows = 0;
    double max_over_mean = 0;              ///< device load straggler ratio
    /// Bytes crossing devices, dispatch and combine: 2 * cross_rows * row_bytes.
    [[nodiscard]] double cross_bytes(std::size_t row_bytes) const { return 2.0 * static_cast<double>(cross_rows) * static_cast<double>(row_bytes); }
};

/// Traffic of `r` (over the experts `device_of` maps: physical experts, or logical experts of
/// a one-replica placement) on `num_devices` devices. Throws [moe.capacity.placement].
template <class W>
[[nodiscard]] traffic_report measure_traffic(const routing<W>& r, const std::vector<std::int32_t>& device_of, std::size_t num_devices) {
    if (device_of.size() != r.num_experts)
        MOE_THROW("moe.capacity.placement", "placement maps ", device_of.size(), " experts, expected num_experts=", r.num_experts);
    for (std::int32_t d : device_of)
        if (d < 0 || static_cast<std::size_t>(d) >= num_devices)
            MOE_THROW("moe.capacity.placement", "placement holds device ", d, ", outside [0, ", num_devices, ")");
    traffic_report t;
    t.num_devices = num_devices;
    t.device_load.assign(num_devices, 0);
    t.sent.assign(num_devices, 0);
    t.received.assign(num_devices, 0);
    const std::size_t T = r.num_tokens;
    for (std::size_t tok = 0; tok < T; ++tok) {
        const std::size_t home = tok * num_devices / std::max<std::size_t>(T, 1);
        for (std::size_t s = 0; s < r.top_k; ++s) {
            const std::int32_t e = r.index(tok, s);
            if (e < 0) continue;
            const auto d = static_cast<std::size_t>(device_of[static_cast<std::size_t>(e)]);
            ++t.device_load[d];
            if (d == home) {
                ++t.local_rows;
            } else {
                ++t.cross_rows;
                ++t.sent[home];
                ++t.received[d];
            }
        }
    }
    const std::size_t total = t.cross_rows + t.local_rows;
    if (total > 0 && num_devices > 0)
        t.max_over_mean = static_cast<double>(*std::max_element(t.device_load.begin(), t.device_load.end())) * static_cast<double>(num_devices) /
                          static_cast<double>(total);
    return t;
}

/// One replica per expert in each of L layers: device[l * E + e] for expert e of layer l.
struct layered_placement {
    std::size_t num_layers = 0, num_experts = 0, num_devices = 0;
    std::vector<std::int32_t> device;
    [[nodiscard]] std::int32_t at(std::size_t l, std::size_t e) const noexcept { return device[l * num_experts + e]; }
    /// Layer l's expert -> device map (the `placement` capacity and device_loads take).
    [[nodiscard]] std::vector<std::int32_t> layer(std::size_t l) const {
        return {device.begin() + static_cast<std::ptrdiff_t>(l * num_experts), device.begin() + static_cast<std::ptrdiff_t>((l + 1) * num_experts)};
    }
};

/// Experts in order, E / D per device, in every layer. Throws [moe.placement.devices].
[[nodiscard]] inline layered_placement contiguous_layers(std::size_t L, std::size_t E, std::size_t D) {
    if (D == 0 || E % D != 0) MOE_THROW("moe.placement.devices", "num_devices=", D, " does not divide the ", E, " experts");
    layered_placement p{L, E, D, std::vector<std::int32_t>(L * E)};
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t e = 0; e < E; ++e) p.device[l * E + e] = static_cast<std::int32_t>(e / (E / D));
    return p;
}

/// Sum of the transition counts whose two experts share a device: sum over l, a, b of
/// C_l(a, b) [device_l(a) == device_{l+1}(b)].
[[nodiscard]] inline double colocated_transitions(const std::vector<matrix<double>>& counts, const layered_placement& p) {
    double s = 0;
    for (std::size_t l = 0; l < counts.size() && l + 1 < p.num_layers; ++l)
        for (std::size_t a = 0; a < p.num_experts; ++a)
            for (std::size_t b = 0; b < p.num_experts; ++b)
                if (p.at(l, a) == p.at(l + 1, b)) s += counts[l](a, b);
    return s;
}

namespace detail {
inline void check_transitions(const std::vector<matrix<double>>& counts, std::size_t L, std::size_t E) {
    if (counts.size() + 1 != L) MOE_THROW("moe.placement.transitions", "expected ", L - 1, " transition matrices for ", L, " layers, got ", counts.size());
    for (const auto& m : counts)
        if (m.rows != E || m.cols != E) MOE_THROW("moe.placement.transitions", "transition matrices must be ", E, " x ", E, ", got ", m.rows, " x ", m.cols);
}
/// Co-located counts expert e of layer l has with its neighbours' layers if it sat on device d.
inline double affinity_of(const std::vector<matrix<double>>& c, const layered_placement& p, std::size_t l, std::size_t e, std::int32_t d) {
    double s = 0;
    const std::size_t E = p.num_experts;
    if (l > 0)
        for (std::size_t a = 0; a < E; ++a)
            if (p.at(l - 1, a) == d) s += c[l - 1](a, e);
    if (l + 1 < p.num_layers)
        for (std::size_t b = 0; b < E; ++b)
            if (p.at(l + 1, b) == d) s += c[l](e, b);
    return s;
}
}  // namespace detail

/// Affinity-aware placement (ExFlow's goal: a token's consecutive experts on one device):
/// layer 0 contiguous, each next layer assigned greedily (the (expert, device) pairs with the
/// most co-located transitions first, E / D experts per device), then pairwise swaps within
/// a layer while any improves the co-located total (at most `max_passes` passes). A local
/// optimum, deterministic (ties: lower indices). Throws [moe.placement.transitions],
/// [moe.placement.devices].
[[nodiscard]] inline layered_placement affinity_placement(const std::vector<matrix<double>>& counts, std::size_t L, std::size_t E,
                                                          std::size_t D, std::size_t max_passes = 50) {
    detail::check_transitions(counts, L, E);
    layered_placement p = contiguous_layers(L, E, D);
    const std::size_t per = E / D;
    for (std::size_t l = 1; l < L; ++l) {
        std::vector<double> score(E * D, 0.0);
        for (std::size_t a = 0; a < E; ++a)
            for (std::size_t b = 0; b < E; ++b) score[b * D + static_cast<std::size_t>(p.at(l - 1, a))] += counts[l - 1](a, b);
        std::vector<std::size_t> order(E * D);
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return score[x] > score[y]; });
        std::vector<char> placed(E, 0);
        std::vector<std::size_t> fill(D, 0);
        for (std::size_t i : order) {
            const std::size_t b = i / D, d = i % D;
            if (placed[b] || fill[d] == per) continue;
            p.device[l * E + b] = static_cast<std::int32_t>(d);
            placed[b] = 1;
            ++fill[d];
        }
    }
    for (std::size_t pass = 0; pass < max_passes; ++pass) {
        bool improved = false;
        for (std::size_t l = 0; l < L; ++l)
            for (std::size_t a = 0; a < E; ++a)
                for (std::size_t b = a + 1; b < E; ++b) {
                    const std::int32_t da = p.at(l, a), db = p.at(l, b);
                    if (da == db) continue;
                    const double before = detail::affinity_of(counts, p, l, a, da) + detail::affinity_of(counts, p, l, b, db);
                    const double after = detail::affinity_of(counts, p, l, a, db) + detail::affinity_of(counts, p, l, b, da);
                    if (after > before + 1e-9) {
                        p.device[l * E + a] = db;
                        p.device[l * E + b] = da;
                        improved = true;
                    }
                }
        if (!improved) break;
    }
    return p;
}

/// Layer-to-layer traffic of a trace: pairs = (token, layer l, expert a of layer l, expert b
/// of layer l+1) over the token's routed slots; crossing = those whose devices differ (the
/// token's activations move between devices between the layers).
struct transition_traffic_report {
    double pairs = 0, crossing = 0;
    [[nodiscard]] double crossing_fraction() const noexcept { return pairs > 0 ? crossing / pairs : 0.0; }
};

/// `device_of(l, e)`: the device of expert e of layer l in the trace's numbering.
template <class DeviceOf>
[[nodiscard]] transition_traffic_report transition_traffic_with(const routing_trace& tr, DeviceOf&& device_of) {
    transition_traffic_report r;
    for (std::size_t l = 0; l + 1 < tr.num_layers; ++l)
        for (std::size_t t = 0; t < tr.num_tokens; ++t)
            for (std::size_t s = 0; s < tr.top_k; ++s) {
                const std::int32_t a = tr.at(l, t, s);
                if (a < 0) continue;
                for (std::size_t u = 0; u < tr.top_k; ++u) {
                    const std::int32_t b = tr.at(l + 1, t, u);
                    if (b < 0) continue;
                    r.pairs += 1;
                    if (device_of(l, static_cast<std::size_t>(a)) != device_of(l + 1, static_cast<std::size_t>(b))) r.crossing += 1;
                }
            }
    return r;
}

/// Traffic under a one-replica layered placement.
[[nodiscard]] inline transition_traffic_report transition_traffic(const routing_trace& tr, const layered_placement& p) {
    return transition_traffic_with(tr, [&](std::size_t l, std::size_t e) { return p.at(l, e); });
}

/// The trace over physical experts: each layer mapped to replicas as `to_physical` does.
[[nodiscard]] inline routing_trace physical_trace(const routing_trace& tr, const replica_placement& p,
                                                  replica_policy policy = replica_policy::round_robin) {
    if (p.num_layers != tr.num_layers)
        MOE_THROW("moe.placement.layer", "placement has ", p.num_layers, " layers, the trace ", tr.num_layers);
    routing_trace out(tr.num_layers, tr.num_tokens, p.num_physical, tr.top_k);
    for (std::size_t l = 0; l < tr.num_layers; ++l) {
        const auto r = to_physical(tr.layer(l), p, l, policy);
        std::copy(r.indices.begin(), r.indices.end(), out.indices.begin() + static_cast<std::ptrdiff_t>(l * tr.num_tokens * tr.top_k));
    }
    return out;
}

/// Traffic under a replicated placement (replicas chosen per slot by `policy`).
[[nodiscard]] inline transition_traffic_report transition_traffic(const routing_trace& tr, const replica_placement& p,
                                                                  replica_policy policy = replica_policy::round_robin) {
    const routing_trace ph = physical_trace(tr, p, policy);
    return transition_traffic_with(ph, [&](std::size_t, std::size_t q) { return p.device_of(q); });
}

}  // namespace moe
