/// @file models/families/dbrx.hpp
/// DBRX (HF `DbrxFFN`): softmax router (`ffn.router.layer`) in float32, top-k (4 of 16), weights
/// divided by their p-norm (`moe_normalize_expert_weights`, 1: the sum); experts stored fused per
/// projection over all experts (`ffn.experts.mlp.w1` / `v1` / `w2`, each [E * F, H]: gate,
/// up, and the down projection transposed), SiLU-gated. Config: `d_model`, `n_layers` and the
/// nested `ffn_config`.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `DbrxRouter`: softmax in float32, top-k (4 of 16), weights divided by their
/// p-norm (`moe_normalize_expert_weights`, 1 in DBRX: the sum, the weights being positive).
/// Throws [moe.config.preset] for other p (moe has no general p-norm).
[[nodiscard]] inline router_config dbrx(std::size_t top_k = 4, float normalize_expert_weights = 1.0f) {
    if (normalize_expert_weights != 1.0f && normalize_expert_weights != 0.0f)
        MOE_THROW("moe.config.preset", "dbrx: moe_normalize_expert_weights=", normalize_expert_weights,
                  " (only 1, the sum, or 0 = none, are supported)");
    router_config c;
    c.top_k = top_k;  // softmax over all experts
    c.renorm = normalize_expert_weights == 1.0f ? renormalize::sum : renormalize::none;
    return c;
}

}  // namespace moe::presets

namespace moe::models::families {

struct dbrx : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"dbrx"};
    static router_config preset(const std::string&) { return presets::dbrx(); }
    static constexpr std::array<const char*, 1> hf_types = {"dbrx"};
    static constexpr const char* hf_hidden_key = "d_model";
    static constexpr expert_names hf_experts = {};  // fused over all experts

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const auto layers = value<std::size_t>(src, "n_layers", 0);
        if (layers && src.layer >= layers)
            MOE_THROW("moe.models.layer", src.model_type, ": layer ", src.layer, " out of range (", layers, " layers)");
        const auto ffn = src.section("ffn_config");
        s.num_experts = need<std::size_t>(ffn, "moe_num_experts");
        s.ffn = need<std::size_t>(ffn, "ffn_hidden_size");
        // HF's DbrxRouter divides by torch.norm(p) only when the key is not null; absent, p = 1.
        const bool normalise = !(ffn.config.contains("moe_normalize_expert_weights") && ffn.config["moe_normalize_expert_weights"].is_null());
        s.router = presets::dbrx(need<std::size_t>(ffn, "moe_top_k"), normalise ? value<float>(ffn, "moe_normalize_expert_weights", 1.0f) : 0.0f);
        if (ffn.config.contains("ffn_act_fn")) {
            const auto act = ffn.section("ffn_act_fn");
            const std::string name = value<std::string>(act, "name", "silu");
            if (name != "silu")
                MOE_THROW("moe.models.config", src.model_type, ": ffn_act_fn '", name, "' (moe runs DBRX's default, silu)");
        }
        const std::size_t E = s.num_experts, H = s.hidden, F = s.ffn;
        const std::string p = "transformer.blocks." + std::to_string(src.layer) + ".ffn.";
        w.router_w = src.rd.read(p + "router.layer.weight", {E, H});
        if (!src.experts) return false;
        w.w1 = src.rd.read(p + "experts.mlp.w1", {E * F, H});  // [E, F, H]: the gate as stored
        w.w3 = src.rd.read(p + "experts.mlp.v1", {E * F, H});
        const std::vector<float> w2 = src.rd.read(p + "experts.mlp.w2", {E * F, H});  // [E, F, H]: down^T
        w.w2.resize(E * H * F);
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t f = 0; f < F; ++f)
                for (std::size_t h = 0; h < H; ++h) w.w2[(e * H + h) * F + f] = w2[(e * F + f) * H + h];
        return false;
    }
};

}  // namespace moe::models::families
