/// @file models/families/qwen3_next.hpp
/// Qwen3-Next (and Qwen3.5-MoE, which reuses its block): HF `Qwen3NextSparseMoeBlock` is
/// Qwen2-MoE's block (softmax router, top-k, renormalised when `norm_topk_prob`, true by
/// default; a shared expert under sigmoid(x . shared_expert_gate)); sparse layers follow
/// `decoder_sparse_step` and `mlp_only_layers`. GGUF: llama.cpp's `qwen3next`.
#pragma once

#include "qwen_moe.hpp"

namespace moe::models::families {

struct qwen3_next : recipe_defaults {
    static constexpr std::array<const char*, 1> hf_types = {"qwen3_next"};
    static constexpr std::array<const char*, 1> gguf_archs = {"qwen3next"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        qwen_moe::load_layout(src, b, /*norm_default=*/true, /*qwen_layers=*/true, /*gated_shared=*/true);
        return false;
    }
    static bool gguf_norm_default(const std::string&) { return true; }
};

}  // namespace moe::models::families
