/// @file models/families/dots1.hpp
/// dots.llm1 (rednote-hilab, HF `Dots1MoE`): DeepSeek-V3's block and tensor layout. Its router
/// is always sigmoid with `e_score_correction_bias` for selection and group-limited top-k
/// (`n_group` / `topk_group`, groups scored by their top-2 sum), whatever `scoring_func` says;
/// `norm_topk_prob` defaults to false (Dots1Config); every layer from `first_k_dense_replace`
/// on is an MoE layer (no `moe_layer_freq`). GGUF: llama.cpp's `dots1`.
#pragma once

#include "../family.hpp"
#include "deepseek.hpp"

namespace moe::models::families {

struct dots1 {
    static constexpr std::array<const char*, 1> hf_types = {"dots1"};
    static constexpr std::array<const char*, 1> gguf_archs = {"dots1"};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        s.num_experts = src.need<std::size_t>("n_routed_experts");
        s.ffn = src.need<std::size_t>("moe_intermediate_size");
        const auto k = src.need<std::size_t>("num_experts_per_tok");
        detail::check_layer(src.config, src.model_type, src.layer, src.layer >= src.get<std::size_t>("first_k_dense_replace", 0));
        s.router = presets::deepseek_v3(k, src.get<std::size_t>("n_group", 1), src.get<std::size_t>("topk_group", 1),
                                        src.get<float>("routed_scaling_factor", 1.0f), src.get<bool>("norm_topk_prob", false));
        deepseek::load_tensors(src, b);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string& t) { return deepseek::hf_expert_modules(L, t); }
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 2; }
};

}  // namespace moe::models::families
