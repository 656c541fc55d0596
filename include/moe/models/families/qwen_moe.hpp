/// @file models/families/qwen_moe.hpp
/// Qwen2-MoE, Qwen3-MoE and OLMoE: softmax router, top-k, optional renormalisation
/// (`norm_topk_prob`); experts `mlp.experts.{e}.gate_proj/up_proj/down_proj`; Qwen2-MoE adds a
/// shared expert scaled by sigmoid(x . shared_expert_gate). Qwen's sparse layers follow
/// `decoder_sparse_step` and `mlp_only_layers`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct qwen_moe {
    static constexpr std::array<const char*, 3> hf_types = {"qwen2_moe", "qwen3_moe", "olmoe"};
    static constexpr std::array<const char*, 3> gguf_archs = {"qwen2moe", "qwen3moe", "olmoe"};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        const std::string& family = src.model_type;
        load_layout(src, b, family == "qwen3_moe", family != "olmoe", family == "qwen2_moe");
        return false;
    }

    /// The Qwen-MoE block: `norm_default` for a missing `norm_topk_prob`; `qwen_layers` for
    /// Qwen's sparse-layer keys and `moe_intermediate_size` (OLMoE: every layer,
    /// `intermediate_size`); `gated_shared` for the shared expert under a sigmoid gate. Shared by
    /// the families built on this layout.
    static void load_layout(const hf_source& src, loaded_block& b, bool norm_default, bool qwen_layers, bool gated_shared) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        s.num_experts = src.need<std::size_t>("num_experts");
        s.ffn = qwen_layers ? src.need<std::size_t>("moe_intermediate_size") : src.need<std::size_t>("intermediate_size");
        const auto k = src.need<std::size_t>("num_experts_per_tok");
        const bool norm = src.get<bool>("norm_topk_prob", norm_default);
        bool sparse = true;
        if (qwen_layers) {
            const auto step = src.get<std::size_t>("decoder_sparse_step", 1);
            const auto dense = src.get<std::vector<std::size_t>>("mlp_only_layers", {});
            sparse = step > 0 && (src.layer + 1) % step == 0 && std::find(dense.begin(), dense.end(), src.layer) == dense.end();
        }
        detail::check_layer(src.config, src.model_type, src.layer, sparse);
        s.router = presets::qwen2_moe(k, norm);
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.weight", {s.num_experts, s.hidden});
        if (src.experts) detail::per_expert(src.rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        if (gated_shared) {
            s.shared_ffn = src.get<std::size_t>("shared_expert_intermediate_size", 0);
            if (s.shared_ffn) s.shared = shared_gate::sigmoid;
            if (s.shared_ffn && src.shared) {
                detail::shared_mlp(src.rd, p + "shared_expert", "gate_proj", "up_proj", "down_proj", s, w);
                w.s_gate = src.rd.read(p + "shared_expert_gate.weight", {1, s.hidden});
            }
        }
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".mlp.experts."};
    }
    static bool gguf_norm_default(const std::string& arch) { return arch == "qwen3moe"; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
