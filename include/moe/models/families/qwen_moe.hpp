/// @file models/families/qwen_moe.hpp
/// Qwen2-MoE, Qwen3-MoE and OLMoE: softmax router, top-k, optional renormalisation
/// (`norm_topk_prob`); experts `mlp.experts.{e}.gate_proj/up_proj/down_proj`; Qwen2-MoE adds a
/// shared expert scaled by sigmoid(x . shared_expert_gate). Qwen's sparse layers follow
/// `decoder_sparse_step` and `mlp_only_layers`.
#pragma once

#include <algorithm>
#include <vector>

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `Qwen2MoeSparseMoeBlock`: softmax in float32, top-k, weights divided by
/// their sum only when `norm_topk_prob` (false in Qwen1.5-MoE / Qwen2-57B-A14B).
[[nodiscard]] inline router_config qwen2_moe(std::size_t top_k = 4, bool norm_topk_prob = false) {
    router_config c;
    c.score = score_function::softmax;
    c.top_k = top_k;
    c.pre_softmax = true;
    c.renorm = norm_topk_prob ? renormalize::sum : renormalize::none;
    return c;
}

/// HF transformers `Qwen3MoeSparseMoeBlock`: softmax in float32, top-k (8 of 128 in
/// Qwen3-30B-A3B / 235B-A22B), weights divided by their sum when `norm_topk_prob` (true).
[[nodiscard]] inline router_config qwen3_moe(std::size_t top_k = 8, bool norm_topk_prob = true) {
    return qwen2_moe(top_k, norm_topk_prob);
}

/// HF transformers `OlmoeSparseMoeBlock` (and `JambaSparseMoeBlock`): softmax in float32,
/// top-k, no renormalisation (`norm_topk_prob` false; OLMoE 8 of 64, Jamba 2 of 16).
[[nodiscard]] inline router_config olmoe(std::size_t top_k = 8) { return qwen2_moe(top_k, false); }

}  // namespace moe::presets

namespace moe::models::families {

struct qwen_moe : recipe_defaults {
    static constexpr std::array<const char*, 3> preset_names = {"qwen2_moe", "qwen3_moe", "olmoe"};
    static router_config preset(const std::string& name) {
        return name == "qwen2_moe" ? presets::qwen2_moe() : name == "qwen3_moe" ? presets::qwen3_moe() : presets::olmoe();
    }
    static constexpr std::array<const char*, 3> hf_types = {"qwen2_moe", "qwen3_moe", "olmoe"};
    static constexpr std::array<const char*, 3> gguf_archs = {"qwen2moe", "qwen3moe", "olmoe"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        const std::string& family = src.model_type;
        load_layout(src, b, family == "qwen3_moe", family != "olmoe", family == "qwen2_moe");
        return false;
    }

    /// The Qwen-MoE block: `norm_default` for a missing `norm_topk_prob`; `qwen_layers` for
    /// Qwen's sparse-layer keys and `moe_intermediate_size` (OLMoE: every layer,
    /// `intermediate_size`); `gated_shared` for the shared expert under a sigmoid gate. Shared by
    /// the families built on this layout.
    template <class Src>
    static void load_layout(const Src& src, loaded_block& b, bool norm_default, bool qwen_layers, bool gated_shared) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = need<std::size_t>(src, "num_experts");
        s.ffn = need<std::size_t>(src, qwen_layers ? "moe_intermediate_size" : "intermediate_size");
        const auto k = need<std::size_t>(src, "num_experts_per_tok");
        const bool norm = value<bool>(src, "norm_topk_prob", norm_default);
        bool sparse = true;
        if (qwen_layers) {
            const auto step = value<std::size_t>(src, "decoder_sparse_step", 1);
            const auto dense = value<std::vector<std::size_t>>(src, "mlp_only_layers", {});
            sparse = step > 0 && (src.layer + 1) % step == 0 && std::find(dense.begin(), dense.end(), src.layer) == dense.end();
        }
        src.check_layer(sparse);
        s.router = presets::qwen2_moe(k, norm);
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        src.per_expert(hf_experts, s, w);
        if (gated_shared) {
            s.shared_ffn = value<std::size_t>(src, "shared_expert_intermediate_size", 0);
            if (s.shared_ffn) s.shared = shared_gate::sigmoid;
            src.shared_mlp(src.prefix + "mlp.shared_expert", s, w);
            if (s.shared_ffn && src.shared) w.s_gate = src.rd.read(p + "shared_expert_gate.weight", {1, s.hidden});
        }
    }
    static bool gguf_norm_default(const std::string& arch) { return arch == "qwen3moe"; }
};

}  // namespace moe::models::families
