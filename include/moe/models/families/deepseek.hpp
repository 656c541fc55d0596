/// @file models/families/deepseek.hpp
/// DeepSeek-V2 / V3 (and R1), Kimi-K2, GLM-4.5 (`glm4_moe`): softmax (V2) or sigmoid router with
/// group-limited selection (`n_group`, `topk_group`), `e_score_correction_bias` for selection,
/// `routed_scaling_factor`; experts `mlp.experts.{e}.*_proj`; `n_shared_experts` shared experts
/// as one MLP. Dense layers: the first `first_k_dense_replace`, and off `moe_layer_freq`.
/// GGUF: llama.cpp's `deepseek2`.
#pragma once

#include "../recipe.hpp"

namespace moe::models::families {

struct deepseek : recipe_defaults {
    static constexpr std::array<const char*, 4> preset_names = {"deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe"};
    static router_config preset(const std::string& name);
    static constexpr std::array<const char*, 4> hf_types = {"deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"deepseek2"};
    static constexpr bool gguf_group_keys = true;

    /// HF `DeepseekV2MoEGate` (modeling_deepseek.py of DeepSeek-V2): softmax in float32; with
    /// `n_group` > 1 ("group_limited_greedy"), groups scored by their max, the best
    /// `topk_group` kept and the rest masked with 0.0; top-k of the masked scores, which are
    /// also the weights (a masked expert weighs 0); then either / (sum + 1e-20) when
    /// `norm_topk_prob` (and k > 1), or x `routed_scaling_factor`.
    [[nodiscard]] static router_config softmax_router(std::size_t top_k, std::size_t n_group, std::size_t topk_group,
                                                      float routed_scaling_factor, bool norm_topk_prob) {
        router_config c;
        c.top_k = top_k;
        const bool norm = norm_topk_prob && top_k > 1;
        c.renorm = norm ? renormalize::sum_eps : renormalize::none;
        c.renorm_eps = norm ? 1e-20f : 0.0f;
        c.scaling_factor = norm ? 1.0f : routed_scaling_factor;
        if (n_group > 1) {
            c.num_groups = n_group;
            c.group_top_k = topk_group;
            c.group_score_top_m = 1;
            c.mask = group_mask::zero;
            c.weights_from_masked = true;
        }
        return c;
    }

    /// HF transformers `DeepseekV3TopkRouter`: sigmoid scores; selection on scores +
    /// e_score_correction_bias; `n_group` groups scored by the sum of their 2 best keys, the
    /// `topk_group` best kept, others masked with 0.0; top-k; weights are the unbiased scores,
    /// divided by (sum + 1e-20) when `norm_topk_prob`, then x `routed_scaling_factor`.
    [[nodiscard]] static router_config sigmoid_router(std::size_t top_k, std::size_t n_group, std::size_t topk_group,
                                                      float routed_scaling_factor, bool norm_topk_prob) {
        router_config c;
        c.score = score_function::sigmoid;
        c.top_k = top_k;
        c.renorm = norm_topk_prob ? renormalize::sum_eps : renormalize::none;
        c.renorm_eps = norm_topk_prob ? 1e-20f : 0.0f;
        c.scaling_factor = routed_scaling_factor;
        c.num_groups = n_group;
        c.group_top_k = topk_group;
        c.group_score_top_m = 2;
        c.mask = group_mask::zero;
        return c;
    }

    /// The tensors of a DeepSeek-layout MoE layer (`mlp.gate`, its optional correction bias,
    /// `mlp.experts`, `mlp.shared_experts` of `n_shared_experts` x the expert ffn); the caller
    /// has set the router and sizes. Shared by the families built on this layout.
    template <class Src>
    static void load_tensors(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        if (src.rd.has(p + "gate.e_score_correction_bias")) {
            s.selection_bias = true;
            w.selection_bias = src.rd.read(p + "gate.e_score_correction_bias", {s.num_experts});
        }
        src.per_expert(hf_experts, s, w);
        s.shared_ffn = s.ffn * value<std::size_t>(src, "n_shared_experts", 0);
        src.shared_mlp(src.prefix + "mlp.shared_experts", s, w);
    }

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        const bool v2 = src.model_type == "deepseek_v2";
        s.num_experts = need<std::size_t>(src, "n_routed_experts");
        s.ffn = need<std::size_t>(src, "moe_intermediate_size");
        const auto k = need<std::size_t>(src, "num_experts_per_tok");
        const auto first_dense = value<std::size_t>(src, "first_k_dense_replace", 0);
        const auto freq = value<std::size_t>(src, "moe_layer_freq", 1);
        src.check_layer(src.layer >= first_dense && freq > 0 && src.layer % freq == 0);
        const auto n_group = value<std::size_t>(src, "n_group", 1), topk_group = value<std::size_t>(src, "topk_group", 1);
        const bool norm = value<bool>(src, "norm_topk_prob", !v2);
        const float scale = value<float>(src, "routed_scaling_factor", 1.0f);
        const std::string scoring = value<std::string>(src, "scoring_func", v2 ? "softmax" : "sigmoid");
        if (scoring == "softmax") {
            const std::string method = value<std::string>(src, "topk_method", "greedy");
            s.router = softmax_router(k, method == "group_limited_greedy" ? n_group : 1, topk_group, scale, norm);
        } else if (scoring == "sigmoid") {
            s.router = sigmoid_router(k, n_group, topk_group, scale, norm);
        } else {
            MOE_THROW("moe.models.config", src.model_type, ": scoring_func '", scoring, "' (expected softmax or sigmoid)");
        }
        load_tensors(src, b);
        return false;
    }
};

}  // namespace moe::models::families

namespace moe::presets {

/// DeepSeek-V2 (`DeepseekV2MoEGate`, see `families::deepseek::softmax_router`) with
/// "group_limited_greedy" for n_group > 1 ("greedy": n_group = 1). DeepSeek-V2: 6 of 160,
/// 8 groups keep 3, x 16, no norm; V2-Lite: 6 of 64, greedy, x 1.
[[nodiscard]] inline router_config deepseek_v2(std::size_t top_k = 6, std::size_t n_group = 8, std::size_t topk_group = 3,
                                               float routed_scaling_factor = 16.0f, bool norm_topk_prob = false) {
    return models::families::deepseek::softmax_router(top_k, n_group, topk_group, routed_scaling_factor, norm_topk_prob);
}

/// DeepSeek-V3 / R1 (`DeepseekV3TopkRouter`, see `families::deepseek::sigmoid_router`): top-8
/// of 256, 8 groups keep 4, / (sum + 1e-20), x 2.5.
[[nodiscard]] inline router_config deepseek_v3(std::size_t top_k = 8, std::size_t n_group = 8, std::size_t topk_group = 4,
                                               float routed_scaling_factor = 2.5f, bool norm_topk_prob = true) {
    return models::families::deepseek::sigmoid_router(top_k, n_group, topk_group, routed_scaling_factor, norm_topk_prob);
}

/// Kimi-K2 (DeepSeek-V3's router, `DeepseekV3TopkRouter`, with n_group = topk_group = 1):
/// sigmoid + e_score_correction_bias for selection, top-8 of 384, / (sum + 1e-20), x 2.827.
[[nodiscard]] inline router_config kimi_k2(std::size_t top_k = 8, float routed_scaling_factor = 2.827f) {
    return deepseek_v3(top_k, 1, 1, routed_scaling_factor, true);
}

/// HF transformers `Glm4MoeTopkRouter` (GLM-4.5 / 4.6): DeepSeek-V3's router with
/// n_group = topk_group = 1, top-8 of 160, / (sum + 1e-20), x 2.5.
[[nodiscard]] inline router_config glm4_moe(std::size_t top_k = 8, float routed_scaling_factor = 2.5f) {
    return deepseek_v3(top_k, 1, 1, routed_scaling_factor, true);
}

}  // namespace moe::presets

namespace moe::models::families {
inline router_config deepseek::preset(const std::string& name) {
    return name == "deepseek_v2" ? presets::deepseek_v2() : name == "deepseek_v3" ? presets::deepseek_v3() : name == "kimi_k2" ? presets::kimi_k2() : presets::glm4_moe();
}
}  // namespace moe::models::families
