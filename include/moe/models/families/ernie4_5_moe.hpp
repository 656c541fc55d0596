/// @file models/families/ernie4_5_moe.hpp
/// ERNIE-4.5 MoE (HF `Ernie4_5_MoeSparseMoeBlock`): softmax over the router logits in float32;
/// selection on the probabilities plus the statistics bias `moe_statics.e_score_correction_bias`
/// ([1, E]); weights are the unbiased probabilities divided by max(sum, `moe_norm_min`);
/// `moe_num_shared_experts` shared experts as one MLP (`shared_experts`). MoE layers: from
/// `moe_layer_start_index` to `moe_layer_end_index` (-1: the last), every `moe_layer_interval`.
/// GGUF: llama.cpp's `ernie4_5-moe`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct ernie4_5_moe {
    static constexpr std::array<const char*, 1> hf_types = {"ernie4_5_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"ernie4_5-moe"};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = src.need<std::size_t>("moe_num_experts");
        s.ffn = src.need<std::size_t>("moe_intermediate_size");
        const auto k = src.need<std::size_t>("moe_k");
        const auto layers = src.get<long long>("num_hidden_layers", 0);
        const auto start = src.get<long long>("moe_layer_start_index", 1);
        auto end = src.get<long long>("moe_layer_end_index", -1);
        if (end < 0) end = layers - 1;
        const auto interval = src.get<long long>("moe_layer_interval", 1);
        const auto L = static_cast<long long>(src.layer);
        detail::check_layer(src.config, src.model_type, src.layer, interval > 0 && (L + 1) % interval == 0 && L >= start && L <= end);
        s.router = presets::mixtral(k);
        s.router.renorm = renormalize::clamp;  // w / max(sum, moe_norm_min)
        s.router.renorm_eps = src.get<float>("moe_norm_min", 1e-12f);
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "moe_statics.e_score_correction_bias", {1, s.num_experts});
        if (src.experts) detail::per_expert(src.rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        s.shared_ffn = s.ffn * src.get<std::size_t>("moe_num_shared_experts", 0);
        if (s.shared_ffn && src.shared) detail::shared_mlp(src.rd, p + "shared_experts", "gate_proj", "up_proj", "down_proj", s, w);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".mlp.experts."};
    }
    static bool gguf_norm_default(const std::string&) { return true; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
