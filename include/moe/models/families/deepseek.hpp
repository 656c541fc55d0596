/// @file models/families/deepseek.hpp
/// DeepSeek-V2 / V3 (and R1), Kimi-K2, GLM-4.5 (`glm4_moe`): softmax (V2) or sigmoid router with
/// group-limited selection (`n_group`, `topk_group`), `e_score_correction_bias` for selection,
/// `routed_scaling_factor`; experts `mlp.experts.{e}.*_proj`; `n_shared_experts` shared experts
/// as one MLP. Dense layers: the first `first_k_dense_replace`, and off `moe_layer_freq`.
/// GGUF: llama.cpp's `deepseek2`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct deepseek {
    static constexpr std::array<const char*, 4> hf_types = {"deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"deepseek2"};

    /// The tensors of a DeepSeek-layout MoE layer (`mlp.gate`, its optional correction bias,
    /// `mlp.experts`, `mlp.shared_experts` of `n_shared_experts` x the expert ffn); the caller
    /// has set the router and sizes. Shared by the families built on this layout.
    static void load_tensors(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        if (src.rd.has(p + "gate.e_score_correction_bias")) {
            s.selection_bias = true;
            w.selection_bias = src.rd.read(p + "gate.e_score_correction_bias", {s.num_experts});
        }
        if (src.experts) detail::per_expert(src.rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        s.shared_ffn = s.ffn * src.get<std::size_t>("n_shared_experts", 0);
        if (s.shared_ffn && src.shared) detail::shared_mlp(src.rd, p + "shared_experts", "gate_proj", "up_proj", "down_proj", s, w);
    }

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        const std::string& family = src.model_type;
        s.num_experts = src.need<std::size_t>("n_routed_experts");
        s.ffn = src.need<std::size_t>("moe_intermediate_size");
        const auto k = src.need<std::size_t>("num_experts_per_tok");
        const auto first_dense = src.get<std::size_t>("first_k_dense_replace", 0);
        const auto freq = src.get<std::size_t>("moe_layer_freq", 1);
        detail::check_layer(src.config, family, src.layer, src.layer >= first_dense && freq > 0 && src.layer % freq == 0);
        const auto n_group = src.get<std::size_t>("n_group", 1), topk_group = src.get<std::size_t>("topk_group", 1);
        const bool norm = src.get<bool>("norm_topk_prob", family != "deepseek_v2");
        const float scale = src.get<float>("routed_scaling_factor", 1.0f);
        const std::string scoring = src.get<std::string>("scoring_func", family == "deepseek_v2" ? "softmax" : "sigmoid");
        if (scoring == "softmax") {
            const std::string method = src.get<std::string>("topk_method", "greedy");
            s.router = presets::deepseek_v2(k, method == "group_limited_greedy" ? n_group : 1, topk_group, scale, norm);
        } else if (scoring == "sigmoid") {
            s.router = presets::deepseek_v3(k, n_group, topk_group, scale, norm);
        } else {
            MOE_THROW("moe.models.config", family, ": scoring_func '", scoring, "' (expected softmax or sigmoid)");
        }
        load_tensors(src, b);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".mlp.experts."};
    }
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
