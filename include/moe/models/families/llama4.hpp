/// @file models/families/llama4.hpp
/// Llama-4 (Scout, Maverick): sigmoid of the top-k logit (`presets::llama4`), the routing weight
/// scaling the expert's input, a shared expert always on; experts fused (`gate_up_proj`
/// [E, H, 2F]: gate = first F columns); MoE layers every `interleave_moe_layer_step`. GGUF:
/// llama.cpp's `llama4`.
#pragma once

#include <vector>

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `Llama4Router`: top-k (1) of the logits, weight = sigmoid of the chosen
/// logit (no renormalisation). The layer multiplies the expert's *input* by that weight.
[[nodiscard]] inline router_config llama4(std::size_t top_k = 1) {
    router_config c;
    c.score = score_function::sigmoid;
    c.top_k = top_k;
    c.select_on_logits = true;
    c.renorm = renormalize::none;
    return c;
}

}  // namespace moe::presets

namespace moe::models::families {

struct llama4 : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"llama4"};
    static router_config preset(const std::string&) { return presets::llama4(); }
    static constexpr std::array<const char*, 2> hf_types = {"llama4", "llama4_text"};
    static constexpr std::array<const char*, 1> gguf_archs = {"llama4"};
    static constexpr expert_names hf_experts = {};  // fused gate_up_proj

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::size_t H = s.hidden;
        s.num_experts = need<std::size_t>(src, "num_local_experts");
        s.ffn = need<std::size_t>(src, "intermediate_size");
        const auto k = value<std::size_t>(src, "num_experts_per_tok", 1);
        const auto step = value<std::size_t>(src, "interleave_moe_layer_step", 1);
        src.check_layer(step > 0 && (src.layer + 1) % step == 0);
        s.router = presets::llama4(k);
        s.weight_on_input = true;
        s.shared_ffn = s.ffn;
        const std::size_t E = s.num_experts, F = s.ffn;
        std::string p = "language_model." + src.prefix + "feed_forward.";
        if (!src.rd.has(p + "router.weight")) p = src.prefix + "feed_forward.";
        w.router_w = src.rd.read(p + "router.weight", {E, H});
        if (src.shared) src.shared_mlp(p + "shared_expert", s, w);
        if (!src.experts) {
            s.validate();
            w.check(s, false, src.shared);
            return true;
        }
        const std::vector<float> gu = src.rd.read(p + "experts.gate_up_proj", {E, H, 2 * F});  // gate = first F columns
        const std::vector<float> d = src.rd.read(p + "experts.down_proj", {E, F, H});
        w.w1.resize(E * F * H);
        w.w3.resize(E * F * H);
        w.w2.resize(E * H * F);
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t h = 0; h < H; ++h)
                for (std::size_t f = 0; f < F; ++f) {
                    w.w1[(e * F + f) * H + h] = gu[(e * H + h) * 2 * F + f];
                    w.w3[(e * F + f) * H + h] = gu[(e * H + h) * 2 * F + F + f];
                    w.w2[(e * H + h) * F + f] = d[(e * F + f) * H + h];
                }
        return false;
    }
    static unsigned gguf_gating_default(const std::string&) { return 2; }
    template <class Src>
    static void gguf_router(const Src&, std::size_t k, block_spec& s) {
        s.router = presets::llama4(k);
        s.weight_on_input = true;
    }
};

}  // namespace moe::models::families
