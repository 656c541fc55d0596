/// @file models/families/minimax_m2.hpp
/// MiniMax-M2: Mixtral's tensor names with a sigmoid router and `e_score_correction_bias` for
/// selection (`presets::minimax_m2`).
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct minimax_m2 {
    static constexpr std::array<const char*, 1> hf_types = {"minimax_m2"};
    static constexpr std::array<const char*, 0> gguf_archs = {};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = src.need<std::size_t>("num_local_experts");
        s.ffn = src.need<std::size_t>("intermediate_size");
        const auto k = src.need<std::size_t>("num_experts_per_tok");
        detail::check_layer(src.config, src.model_type, src.layer, true);
        s.router = presets::minimax_m2(k);
        const std::string p = src.prefix + "block_sparse_moe.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "e_score_correction_bias", {s.num_experts});
        if (src.experts) detail::per_expert(src.rd, p + "experts", "w1", "w3", "w2", s, w);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".block_sparse_moe.experts.", "w1", "w3", "w2"};
    }
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
