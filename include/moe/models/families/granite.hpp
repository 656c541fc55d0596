/// @file models/families/granite.hpp
/// IBM Granite MoE (`granitemoe`, `granitemoeshared`): softmax over the top-k logits
/// (`presets::granite_moe`); experts fused per projection (`input_linear` [E, 2F, H]: gate = the
/// first F rows; `output_linear` [E, H, F]); GraniteMoeShared adds a shared MLP.
#pragma once

#include <algorithm>
#include <vector>

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `GraniteMoeTopKGating` (Granite-MoE, GraniteMoeShared): top-k of the
/// logits, then softmax over the k chosen.
[[nodiscard]] inline router_config granite_moe(std::size_t top_k = 8) { return models::softmax_of_top_k_logits(top_k); }

}  // namespace moe::presets

namespace moe::models::families {

struct granite : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"granite_moe"};
    static router_config preset(const std::string&) { return presets::granite_moe(); }
    static constexpr std::array<const char*, 2> hf_types = {"granitemoe", "granitemoeshared"};
    static constexpr expert_names hf_experts = {};  // fused per projection

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::size_t H = s.hidden;
        s.num_experts = need<std::size_t>(src, "num_local_experts");
        s.ffn = need<std::size_t>(src, "intermediate_size");
        const auto k = need<std::size_t>(src, "num_experts_per_tok");
        src.check_layer(true);
        s.router = presets::granite_moe(k);
        const std::size_t E = s.num_experts, F = s.ffn;
        const std::string p = src.prefix + "block_sparse_moe.";
        w.router_w = src.rd.read(p + "router.layer.weight", {E, H});
        if (src.model_type == "granitemoeshared") {
            s.shared_ffn = value<std::size_t>(src, "shared_intermediate_size", 0);
            if (s.shared_ffn && src.shared) {
                const std::size_t Fs = s.shared_ffn;
                const std::vector<float> si = src.rd.read(src.prefix + "shared_mlp.input_linear.weight", {2 * Fs, H});
                w.s1.assign(si.begin(), si.begin() + static_cast<std::ptrdiff_t>(Fs * H));
                w.s3.assign(si.begin() + static_cast<std::ptrdiff_t>(Fs * H), si.end());
                w.s2 = src.rd.read(src.prefix + "shared_mlp.output_linear.weight", {H, Fs});
            }
        }
        if (!src.experts) {
            s.validate();
            w.check(s, false, src.shared);
            return true;
        }
        const std::vector<float> in = src.rd.read(p + "input_linear.weight", {E, 2 * F, H});  // gate = first F rows
        w.w1.assign(E * F * H, 0.0f);
        w.w3.assign(E * F * H, 0.0f);
        for (std::size_t e = 0; e < E; ++e) {
            std::copy(in.begin() + static_cast<std::ptrdiff_t>(e * 2 * F * H), in.begin() + static_cast<std::ptrdiff_t>((e * 2 * F + F) * H),
                      w.w1.begin() + static_cast<std::ptrdiff_t>(e * F * H));
            std::copy(in.begin() + static_cast<std::ptrdiff_t>((e * 2 * F + F) * H), in.begin() + static_cast<std::ptrdiff_t>((e + 1) * 2 * F * H),
                      w.w3.begin() + static_cast<std::ptrdiff_t>(e * F * H));
        }
        w.w2 = src.rd.read(p + "output_linear.weight", {E, H, F});
        return false;
    }
};

}  // namespace moe::models::families
