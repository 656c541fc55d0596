/// @file models/families/minimax_m2.hpp
/// MiniMax-M2 (HF `MiniMaxM2SparseMoeBlock`): sigmoid router with `e_score_correction_bias` for
/// selection (`presets::minimax_m2`); experts `block_sparse_moe.experts.{e}.w1/w3/w2`.
#pragma once

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `MiniMaxM2SparseMoeBlock.route_tokens_to_experts`: sigmoid scores, selection
/// on scores + e_score_correction_bias, top-8 of 256, weights (unbiased scores) / their sum
/// (no eps), no scaling.
[[nodiscard]] inline router_config minimax_m2(std::size_t top_k = 8) {
    router_config c;
    c.score = score_function::sigmoid;
    c.top_k = top_k;
    c.renorm = renormalize::sum;
    return c;
}

}  // namespace moe::presets

namespace moe::models::families {

struct minimax_m2 : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"minimax_m2"};
    static router_config preset(const std::string&) { return presets::minimax_m2(); }
    static constexpr std::array<const char*, 1> hf_types = {"minimax_m2"};
    static constexpr expert_names hf_experts = {"block_sparse_moe.experts", "w1", "w3", "w2"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = need<std::size_t>(src, "num_local_experts");
        s.ffn = need<std::size_t>(src, "intermediate_size");
        src.check_layer(true);
        s.router = presets::minimax_m2(need<std::size_t>(src, "num_experts_per_tok"));
        const std::string p = src.prefix + "block_sparse_moe.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "e_score_correction_bias", {s.num_experts});
        src.per_expert(hf_experts, s, w);
        return false;
    }
};

}  // namespace moe::models::families
