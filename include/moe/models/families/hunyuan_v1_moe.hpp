/// @file models/families/hunyuan_v1_moe.hpp
/// Hunyuan-A13B (HF `HunYuanMoEV1Moe`): softmax router (`mlp.gate.wg`), top-k (`moe_topk`, an
/// int or one per layer), weights divided by their sum; every layer is an MoE layer with a shared
/// MLP (`mlp.shared_mlp`) always on. `num_experts` may also be one per layer. The expert and
/// shared ffn sizes are read from the tensors (the configs spell them several ways).
/// GGUF: llama.cpp's `hunyuan-moe`.
#pragma once

#include <vector>

#include "../recipe.hpp"

namespace moe::models::families {

struct hunyuan_v1_moe : recipe_defaults {
    static constexpr std::array<const char*, 1> hf_types = {"hunyuan_v1_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"hunyuan-moe"};

    /// A config value that is an int or a list with one entry per layer.
    template <class Src>
    static std::size_t per_layer(const Src& src, const char* key) {
        if (src.config.contains(key) && src.config[key].is_array()) {
            const auto v = value<std::vector<std::size_t>>(src, key, {});
            if (src.layer >= v.size())
                MOE_THROW("moe.models.config", src.model_type, ": '", key, "' has ", v.size(), " entries, no layer ", src.layer);
            return v[src.layer];
        }
        return need<std::size_t>(src, key);
    }

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        src.check_layer(true);
        s.num_experts = per_layer(src, "num_experts");
        s.router.top_k = per_layer(src, "moe_topk");  // softmax over all experts, renormalised
        s.router.renorm = renormalize::sum;
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.wg.weight", {s.num_experts, s.hidden});
        const auto g0 = src.ck.tensor(p + "experts.0.gate_proj.weight");
        s.ffn = g0.shape.size() == 2 ? g0.shape[0] : 0;
        src.per_expert(hf_experts, s, w);
        const auto sg = src.ck.tensor(p + "shared_mlp.gate_proj.weight");
        s.shared_ffn = sg.shape.size() == 2 ? sg.shape[0] : 0;
        src.shared_mlp(src.prefix + "mlp.shared_mlp", s, w);
        return false;
    }
    static bool gguf_norm_default(const std::string&) { return true; }
};

}  // namespace moe::models::families
