/// @file models/families/ernie4_5_moe.hpp
/// ERNIE-4.5 MoE (HF `Ernie4_5_MoeSparseMoeBlock`): softmax over the router logits in float32;
/// selection on the probabilities plus the statistics bias `moe_statics.e_score_correction_bias`
/// ([1, E]); weights are the unbiased probabilities divided by max(sum, `moe_norm_min`);
/// `moe_num_shared_experts` shared experts as one MLP (`shared_experts`). MoE layers: from
/// `moe_layer_start_index` to `moe_layer_end_index` (-1: the last), every `moe_layer_interval`.
/// GGUF: llama.cpp's `ernie4_5-moe`.
#pragma once

#include "../recipe.hpp"

namespace moe::models::families {

struct ernie4_5_moe : recipe_defaults {
    static constexpr std::array<const char*, 1> hf_types = {"ernie4_5_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"ernie4_5-moe"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = need<std::size_t>(src, "moe_num_experts");
        s.ffn = need<std::size_t>(src, "moe_intermediate_size");
        const auto layers = value<long long>(src, "num_hidden_layers", 0);
        const auto start = value<long long>(src, "moe_layer_start_index", 1);
        auto end = value<long long>(src, "moe_layer_end_index", -1);
        if (end < 0) end = layers - 1;
        const auto interval = value<long long>(src, "moe_layer_interval", 1);
        const auto L = static_cast<long long>(src.layer);
        src.check_layer(interval > 0 && (L + 1) % interval == 0 && L >= start && L <= end);
        s.router.top_k = need<std::size_t>(src, "moe_k");  // softmax over all experts, then:
        s.router.renorm = renormalize::clamp;               // w / max(sum, moe_norm_min)
        s.router.renorm_eps = value<float>(src, "moe_norm_min", 1e-12f);
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "moe_statics.e_score_correction_bias", {1, s.num_experts});
        src.per_expert(hf_experts, s, w);
        s.shared_ffn = s.ffn * value<std::size_t>(src, "moe_num_shared_experts", 0);
        src.shared_mlp(src.prefix + "mlp.shared_experts", s, w);
        return false;
    }
    static bool gguf_norm_default(const std::string&) { return true; }
};

}  // namespace moe::models::families
