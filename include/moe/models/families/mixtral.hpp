/// @file models/families/mixtral.hpp
/// Mixtral (HF `MixtralSparseMoeBlock`): softmax router, top-k, renormalised; SwiGLU experts
/// `block_sparse_moe.experts.{e}.w1/w3/w2`. GGUF: llama.cpp's `llama` architecture.
#pragma once

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `MixtralSparseMoeBlock`: softmax over all experts in float32, top-2,
/// weights divided by their sum (no eps).
[[nodiscard]] inline router_config mixtral(std::size_t top_k = 2) {
    router_config c;
    c.score = score_function::softmax;
    c.top_k = top_k;
    c.pre_softmax = true;
    c.renorm = renormalize::sum;
    return c;
}

}  // namespace moe::presets

namespace moe::models::families {

struct mixtral : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"mixtral"};
    static router_config preset(const std::string&) { return presets::mixtral(); }
    static constexpr std::array<const char*, 1> hf_types = {"mixtral"};
    static constexpr std::array<const char*, 1> gguf_archs = {"llama"};
    static constexpr expert_names hf_experts = {"block_sparse_moe.experts", "w1", "w3", "w2"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        s.num_experts = need<std::size_t>(src, "num_local_experts");
        s.ffn = need<std::size_t>(src, "intermediate_size");
        src.check_layer(true);
        s.router = presets::mixtral(need<std::size_t>(src, "num_experts_per_tok"));
        b.weights.router_w = src.rd.read(src.prefix + "block_sparse_moe.gate.weight", {s.num_experts, s.hidden});
        src.per_expert(hf_experts, s, b.weights);
        return false;
    }
    static bool gguf_norm_default(const std::string&) { return true; }
};

}  // namespace moe::models::families
