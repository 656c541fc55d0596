/// @file models/families/longcat_flash.hpp
/// LongCat-Flash (HF `LongcatFlashMoE`): the router (`mlp.router.classifier`, no bias in the
/// forward) scores the `n_routed_experts` real experts and `zero_expert_num` zero-computation
/// identity experts with one softmax; selection on the scores plus
/// `router.e_score_correction_bias`; weights are the unbiased scores times
/// `routed_scaling_factor` (no renormalisation). A slot on an identity expert adds weight * x.
/// Every layer has the MoE block; experts `mlp.experts.{e}.*_proj` of `expert_ffn_hidden_size`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct longcat_flash {
    static constexpr std::array<const char*, 1> hf_types = {"longcat_flash"};
    static constexpr std::array<const char*, 0> gguf_archs = {};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const auto layers = src.get<std::size_t>("num_layers", 0);
        if (layers && src.layer >= layers)
            MOE_THROW("moe.models.layer", src.model_type, ": layer ", src.layer, " out of range (", layers, " layers)");
        s.num_experts = src.need<std::size_t>("n_routed_experts");
        s.zero_experts = src.get<std::size_t>("zero_expert_num", 0);
        s.ffn = src.need<std::size_t>("expert_ffn_hidden_size");
        s.router = presets::mixtral(src.need<std::size_t>("moe_topk"));
        s.router.renorm = renormalize::none;
        s.router.scaling_factor = src.get<float>("routed_scaling_factor", 1.0f);
        const std::size_t R = s.routed_experts();
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "router.classifier.weight", {R, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "router.e_score_correction_bias", {R});
        if (src.experts) detail::per_expert(src.rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".mlp.experts."};
    }
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
