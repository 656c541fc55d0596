/// @file models/families/dots1.hpp
/// dots.llm1 (rednote-hilab, HF `Dots1MoE`): DeepSeek-V3's block and tensor layout. Its router
/// is always sigmoid with `e_score_correction_bias` for selection and group-limited top-k
/// (`n_group` / `topk_group`, groups scored by their top-2 sum), whatever `scoring_func` says;
/// `norm_topk_prob` defaults to false (Dots1Config); every layer from `first_k_dense_replace`
/// on is an MoE layer (no `moe_layer_freq`). GGUF: llama.cpp's `dots1`.
#pragma once

#include "deepseek.hpp"

namespace moe::models::families {

struct dots1 : recipe_defaults {
    static constexpr std::array<const char*, 1> hf_types = {"dots1"};
    static constexpr std::array<const char*, 1> gguf_archs = {"dots1"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        s.num_experts = need<std::size_t>(src, "n_routed_experts");
        s.ffn = need<std::size_t>(src, "moe_intermediate_size");
        const auto k = need<std::size_t>(src, "num_experts_per_tok");
        src.check_layer(src.layer >= value<std::size_t>(src, "first_k_dense_replace", 0));
        s.router = deepseek::sigmoid_router(k, value<std::size_t>(src, "n_group", 1), value<std::size_t>(src, "topk_group", 1),
                                            value<float>(src, "routed_scaling_factor", 1.0f), value<bool>(src, "norm_topk_prob", false));
        deepseek::load_tensors(src, b);
        return false;
    }
    static unsigned gguf_gating_default(const std::string&) { return 2; }
};

}  // namespace moe::models::families
