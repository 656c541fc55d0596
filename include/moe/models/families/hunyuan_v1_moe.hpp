/// @file models/families/hunyuan_v1_moe.hpp
/// Hunyuan-A13B (HF `HunYuanMoEV1Moe`): softmax router (`mlp.gate.wg`), top-k (`moe_topk`, an
/// int or one per layer), weights divided by their sum; every layer is an MoE layer with a shared
/// MLP (`mlp.shared_mlp`) always on. `num_experts` may also be one per layer. The expert and
/// shared ffn sizes are read from the tensors (the configs spell them several ways).
/// GGUF: llama.cpp's `hunyuan-moe`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct hunyuan_v1_moe {
    static constexpr std::array<const char*, 1> hf_types = {"hunyuan_v1_moe"};
    static constexpr std::array<const char*, 1> gguf_archs = {"hunyuan-moe"};

    /// A config value that is an int or a list with one entry per layer.
    static std::size_t per_layer(const hf_source& src, const char* key) {
        if (src.config.contains(key) && src.config[key].is_array()) {
            const auto v = src.get<std::vector<std::size_t>>(key, {});
            if (src.layer >= v.size())
                MOE_THROW("moe.models.config", src.model_type, ": '", key, "' has ", v.size(), " entries, no layer ", src.layer);
            return v[src.layer];
        }
        return src.need<std::size_t>(key);
    }

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        detail::check_layer(src.config, src.model_type, src.layer, true);
        s.num_experts = per_layer(src, "num_experts");
        const std::size_t k = per_layer(src, "moe_topk");
        s.router = presets::mixtral(k);
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "gate.wg.weight", {s.num_experts, s.hidden});
        const io::tensor_view g0 = src.ck.tensor(p + "experts.0.gate_proj.weight");
        s.ffn = g0.shape.size() == 2 ? g0.shape[0] : 0;
        if (src.experts) detail::per_expert(src.rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        const io::tensor_view sg = src.ck.tensor(p + "shared_mlp.gate_proj.weight");
        s.shared_ffn = sg.shape.size() == 2 ? sg.shape[0] : 0;
        if (s.shared_ffn && src.shared) detail::shared_mlp(src.rd, p + "shared_mlp", "gate_proj", "up_proj", "down_proj", s, w);
        return false;
    }
    static expert_modules hf_expert_modules(std::size_t L, const std::string&) {
        return {"model.layers." + std::to_string(L) + ".mlp.experts."};
    }
    static bool gguf_norm_default(const std::string&) { return true; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
};

}  // namespace moe::models::families
