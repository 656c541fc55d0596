/// @file analysis/record.hpp
/// Engine-neutral routing records: every MoE layer's routing of one forward, as an RL trainer
/// records it at rollout and replays it in training (Megatron-Core's router replay) or a debugger
/// forces it. A record is a directory of three files that any framework reads:
///
///     indices.npy   int32   [L, T, k]   expert per slot, -1 = empty (dynamic k, drops)
///     weights.npy   float32 [L, T, k]   the slot's weight (0 for an empty slot); optional
///     record.json   {"format": "moe.routing_record", "version": 1, "model": ..., "layers": [...],
///                    "num_experts": E, "top_k": k, "recipe": {...}, "dtype": "float32",
///                    "tie_rule": "lower_index", "moe_version": "0.1.0"}
///
/// `layers` are the model's layer ids of the L recorded layers (MoE layers only). The files come
/// from outside: read_record checks every shape, index, weight and field against the others.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../io/npy.hpp"
#include "../router.hpp"
#include "../scoring.hpp"
#include "../tensor.hpp"
#include "trace.hpp"

namespace moe {

/// The routing of L layers for T tokens (k slots each).
struct routing_record {
    std::size_t num_layers = 0, num_tokens = 0, num_experts = 0, top_k = 0;
    std::vector<std::int32_t> indices;  ///< L x T x k
    std::vector<float> weights;         ///< L x T x k, or empty (indices only)
    std::vector<std::size_t> layers;    ///< the model's layer id of each recorded layer
    std::string model;                  ///< what was run (a path or a name); free text
    nlohmann::json recipe = nlohmann::json::object();  ///< the router's settings, as router_recipe_json writes them

    [[nodiscard]] matrix_view<const std::int32_t> layer_indices(std::size_t l) const noexcept {
        return {indices.data() + l * num_tokens * top_k, num_tokens, top_k};
    }
    /// Layer l's weights, or an empty view when the record has none.
    [[nodiscard]] matrix_view<const float> layer_weights(std::size_t l) const noexcept {
        if (weights.empty()) return {};
        return {weights.data() + l * num_tokens * top_k, num_tokens, top_k};
    }
    /// The position of model layer `id` among the recorded layers. Throws [moe.record.layer].
    [[nodiscard]] std::size_t position_of(std::size_t id) const {
        for (std::size_t l = 0; l < layers.size(); ++l)
            if (layers[l] == id) return l;
        std::string ids;
        for (std::size_t l = 0; l < layers.size(); ++l) ids += (l ? ", " : "") + std::to_string(layers[l]);
        MOE_THROW("moe.record.layer", "layer ", id, " is not in the record (layers ", ids, ")");
    }
    /// The indices as a routing trace (for routing_stats, caches, placement).
    [[nodiscard]] routing_trace trace() const {
        routing_trace tr(num_layers, num_tokens, num_experts, top_k);
        tr.indices = indices;
        return tr;
    }
};

/// The settings of `cfg` as the record's "recipe" object.
[[nodiscard]] inline nlohmann::json router_recipe_json(const router_config& cfg) {
    nlohmann::json j;
    j["score"] = to_string(cfg.score);
    j["top_k"] = cfg.top_k;
    j["pre_softmax"] = cfg.pre_softmax;
    j["select_on_logits"] = cfg.select_on_logits;
    j["renorm"] = to_string(cfg.renorm);
    j["renorm_eps"] = cfg.renorm_eps;
    j["scaling_factor"] = cfg.scaling_factor;
    j["num_groups"] = cfg.num_groups;
    j["group_top_k"] = cfg.group_top_k;
    j["group_score_top_m"] = cfg.group_score_top_m;
    j["weights_from_masked"] = cfg.weights_from_masked;
    return j;
}

/// Writes `r` into directory `dir` (created if missing). Throws [moe.record.shape] for
/// inconsistent sizes, [moe.record.index] / [moe.record.weights] for what read_record would
/// refuse, and [moe.record.io] when a file cannot be written.
inline void write_record(const std::string& dir, const routing_record& r) {
    if (r.num_experts == 0 || r.top_k == 0)
        MOE_THROW("moe.record.shape", "num_experts=", r.num_experts, " and top_k=", r.top_k, " must be >= 1");
    const std::size_t n = r.num_layers * r.num_tokens * r.top_k;
    if (r.indices.size() != n || (!r.weights.empty() && r.weights.size() != n) || r.layers.size() != r.num_layers)
        MOE_THROW("moe.record.shape", "record of ", r.num_layers, " layers x ", r.num_tokens, " tokens x k=", r.top_k, " holds ",
                  r.indices.size(), " indices, ", r.weights.size(), " weights and ", r.layers.size(), " layer ids");
    // What read_record would refuse is not written.
    for (std::size_t i = 0; i < n; ++i)
        if (r.indices[i] < -1 || r.indices[i] >= static_cast<std::int64_t>(r.num_experts))
            MOE_THROW("moe.record.index", "layer ", i / (r.num_tokens * r.top_k), ", token ", (i / r.top_k) % r.num_tokens, ", slot ",
                      i % r.top_k, " holds expert ", r.indices[i], ", outside [-1, ", r.num_experts, ")");
    for (std::size_t i = 0; i < r.weights.size(); ++i)
        if (!std::isfinite(r.weights[i]))
            MOE_THROW("moe.record.weights", "layer ", i / (r.num_tokens * r.top_k), ", token ", (i / r.top_k) % r.num_tokens, ", slot ",
                      i % r.top_k, " is not finite");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) MOE_THROW("moe.record.io", dir, ": cannot create the directory (", ec.message(), ")");
    const std::vector<std::size_t> shape{r.num_layers, r.num_tokens, r.top_k};
    io::write_npy(dir + "/indices.npy", r.indices.data(), shape);
    if (!r.weights.empty()) io::write_npy(dir + "/weights.npy", r.weights.data(), shape);
    else std::filesystem::remove(dir + "/weights.npy", ec);
    nlohmann::json j;
    j["format"] = "moe.routing_record";
    j["version"] = 1;
    j["model"] = r.model;
    j["layers"] = r.layers;
    j["num_experts"] = r.num_experts;
    j["top_k"] = r.top_k;
    j["recipe"] = r.recipe;
    j["dtype"] = "float32";
    j["tie_rule"] = "lower_index";
    j["moe_version"] = std::to_string(MOE_VERSION_MAJOR) + "." + std::to_string(MOE_VERSION_MINOR) + "." + std::to_string(MOE_VERSION_PATCH);
    std::ofstream f(dir + "/record.json");
    f << j.dump(2) << "\n";
    f.close();
    if (!f) MOE_THROW("moe.record.io", dir, "/record.json: cannot write");
}

/// Reads the record in `dir`. Throws [moe.record.io] (a file missing or unreadable),
/// [moe.record.sidecar] (record.json malformed or of another format), [moe.record.shape]
/// (indices / weights / sidecar disagree), [moe.record.index] (an index outside [-1, E) or an
/// expert twice in a token), [moe.record.weights] (a weight not finite), and the .npy reader's errors.
[[nodiscard]] inline routing_record read_record(const std::string& dir) {
    const std::string js = dir + "/record.json";
    std::ifstream f(js);
    if (!f) MOE_THROW("moe.record.io", js, ": cannot open (a routing record is a directory with record.json, indices.npy, weights.npy)");
    nlohmann::json j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) MOE_THROW("moe.record.sidecar", js, ": not a JSON object");
    if (!j.contains("format") || j["format"] != "moe.routing_record")
        MOE_THROW("moe.record.sidecar", js, ": \"format\" is not \"moe.routing_record\"");
    auto count = [&](const char* key) -> std::size_t {
        if (!j.contains(key) || !j[key].is_number_unsigned()) MOE_THROW("moe.record.sidecar", js, ": \"", key, "\" must be a non-negative integer");
        return j[key].get<std::size_t>();
    };
    if (count("version") != 1) MOE_THROW("moe.record.sidecar", js, ": version ", j["version"].dump(), " (this reader knows 1)");
    routing_record r;
    r.num_experts = count("num_experts");
    r.top_k = count("top_k");
    if (r.num_experts == 0 || r.top_k == 0) MOE_THROW("moe.record.sidecar", js, ": num_experts and top_k must be >= 1");
    if (!j.contains("layers") || !j["layers"].is_array()) MOE_THROW("moe.record.sidecar", js, ": \"layers\" must be an array of layer ids");
    for (const auto& v : j["layers"]) {
        if (!v.is_number_unsigned()) MOE_THROW("moe.record.sidecar", js, ": \"layers\" must be an array of layer ids");
        r.layers.push_back(v.get<std::size_t>());
    }
    if (j.contains("model") && j["model"].is_string()) r.model = j["model"].get<std::string>();
    if (j.contains("recipe") && j["recipe"].is_object()) r.recipe = j["recipe"];
    const std::string ip = dir + "/indices.npy", wp = dir + "/weights.npy";
    const io::npy_array ia = io::read_npy(ip);
    if (ia.shape.size() != 3 || ia.shape[0] != r.layers.size() || ia.shape[2] != r.top_k)
        MOE_THROW("moe.record.shape", ip, ": shape ", io::shape_string(ia.shape), ", the sidecar gives ", r.layers.size(), " layers and k=",
                  r.top_k);
    if (ia.descr[1] != 'i' && ia.descr[1] != 'u') MOE_THROW("moe.record.shape", ip, ": dtype '", ia.descr, "' where integers were expected");
    r.num_layers = ia.shape[0];
    r.num_tokens = ia.shape[1];
    const std::vector<std::int64_t> v = io::npy_values<std::int64_t>(ia, ip);
    r.indices.resize(v.size());
    const std::size_t k = r.top_k;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] < -1 || v[i] >= static_cast<std::int64_t>(r.num_experts))
            MOE_THROW("moe.record.index", ip, ": layer ", i / (r.num_tokens * k), ", token ", (i / k) % r.num_tokens, ", slot ", i % k,
                      " holds expert ", v[i], ", outside [-1, ", r.num_experts, ")");
        r.indices[i] = static_cast<std::int32_t>(v[i]);
        for (std::size_t s = i - i % k; s < i; ++s)
            if (r.indices[i] >= 0 && r.indices[s] == r.indices[i])
                MOE_THROW("moe.record.index", ip, ": layer ", i / (r.num_tokens * k), ", token ", (i / k) % r.num_tokens, " lists expert ",
                          r.indices[i], " twice");
    }
    std::error_code ec;
    if (std::filesystem::exists(wp, ec)) {
        const io::npy_array wa = io::read_npy(wp);
        if (wa.shape != ia.shape)
            MOE_THROW("moe.record.shape", wp, ": shape ", io::shape_string(wa.shape), ", indices.npy has ", io::shape_string(ia.shape));
        if (wa.descr[1] != 'f') MOE_THROW("moe.record.shape", wp, ": dtype '", wa.descr, "' where floats were expected");
        r.weights = io::npy_values<float>(wa, wp);
        for (std::size_t i = 0; i < r.weights.size(); ++i)
            if (!std::isfinite(r.weights[i]))
                MOE_THROW("moe.record.weights", wp, ": layer ", i / (r.num_tokens * k), ", token ", (i / k) % r.num_tokens, ", slot ",
                          i % k, " is not finite");
    }
    return r;
}

}  // namespace moe
