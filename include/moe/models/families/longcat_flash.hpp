/// @file models/families/longcat_flash.hpp
/// LongCat-Flash (HF `LongcatFlashMoE`): the router (`mlp.router.classifier`, no bias in the
/// forward) scores the `n_routed_experts` real experts and `zero_expert_num` zero-computation
/// identity experts with one softmax; selection on the scores plus
/// `router.e_score_correction_bias`; weights are the unbiased scores times
/// `routed_scaling_factor` (no renormalisation). A slot on an identity expert adds weight * x.
/// Every layer has the MoE block; experts `mlp.experts.{e}.*_proj` of `expert_ffn_hidden_size`.
#pragma once

#include "../recipe.hpp"

namespace moe::models::families {

struct longcat_flash : recipe_defaults {
    static constexpr std::array<const char*, 1> hf_types = {"longcat_flash"};

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const auto layers = value<std::size_t>(src, "num_layers", 0);
        if (layers && src.layer >= layers)
            MOE_THROW("moe.models.layer", src.model_type, ": layer ", src.layer, " out of range (", layers, " layers)");
        s.num_experts = need<std::size_t>(src, "n_routed_experts");
        s.zero_experts = value<std::size_t>(src, "zero_expert_num", 0);
        s.ffn = need<std::size_t>(src, "expert_ffn_hidden_size");
        s.router.top_k = need<std::size_t>(src, "moe_topk");  // softmax over all, no renormalisation
        s.router.scaling_factor = value<float>(src, "routed_scaling_factor", 1.0f);
        const std::size_t R = s.routed_experts();
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "router.classifier.weight", {R, s.hidden});
        s.selection_bias = true;
        w.selection_bias = src.rd.read(p + "router.e_score_correction_bias", {R});
        src.per_expert(hf_experts, s, w);
        return false;
    }
};

}  // namespace moe::models::families
