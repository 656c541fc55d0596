/// @file models/families/gpt_oss.hpp
/// GPT-OSS: a router linear with bias, softmax over the top-k logits (`presets::gpt_oss`);
/// experts with biases and the clamped SwiGLU (`swiglu_oai`, `swiglu_limit`), stored fused and
/// interleaved (`gate_up_proj` [E, H, 2F]: gate = even outputs, up = odd) in bf16, or as MXFP4
/// `_blocks` / `_scales` (the released checkpoints). GGUF: llama.cpp's `gpt-oss`.
#pragma once

#include <vector>

#include "../recipe.hpp"

namespace moe::presets {

/// HF transformers `GptOssTopKRouter`: logits = x W^T + b (the router bias is the gate's
/// bias), top-k of the logits (4 of 32 / 128), softmax over the k chosen.
[[nodiscard]] inline router_config gpt_oss(std::size_t top_k = 4) { return models::softmax_of_top_k_logits(top_k); }

}  // namespace moe::presets

namespace moe::models::families {

struct gpt_oss : recipe_defaults {
    static constexpr std::array<const char*, 1> preset_names = {"gpt_oss"};
    static router_config preset(const std::string&) { return presets::gpt_oss(); }
    static constexpr std::array<const char*, 1> hf_types = {"gpt_oss"};
    static constexpr std::array<const char*, 1> gguf_archs = {"gpt-oss"};
    static constexpr expert_names hf_experts = {};  // fused, interleaved gate_up_proj

    template <class Src>
    static bool load_hf(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::size_t H = s.hidden;
        s.num_experts = need<std::size_t>(src, "num_local_experts");
        s.ffn = need<std::size_t>(src, "intermediate_size");
        const auto k = value<std::size_t>(src, "num_experts_per_tok", value<std::size_t>(src, "experts_per_token", 4));
        src.check_layer(true);
        s.router = presets::gpt_oss(k);
        s.router_bias = s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = value<float>(src, "swiglu_limit", 7.0f);
        const std::size_t E = s.num_experts, F = s.ffn;
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "router.weight", {E, H});
        w.router_b = src.rd.read(p + "router.bias", {E});
        const std::string x = p + "experts.";
        if (src.shared) {  // the rest of the block: the experts' biases (also for experts packed in their format)
            const std::vector<float> gb = src.rd.read(x + "gate_up_proj_bias", {E, 2 * F});
            w.b1.resize(E * F);
            w.b3.resize(E * F);
            for (std::size_t i = 0; i < E * F; ++i) {
                w.b1[i] = gb[2 * i];
                w.b3[i] = gb[2 * i + 1];
            }
            w.b2 = src.rd.read(x + "down_proj_bias", {E, H});
        }
        if (!src.experts) return false;
        std::vector<float> gu, down;  // [E, 2F, H] and [E, H, F] (output-major, as MXFP4 stores them)
        if (src.rd.has(x + "gate_up_proj_blocks")) {
            gu = src.rd.read_mxfp4(x + "gate_up_proj", E, 2 * F, H);
            down = src.rd.read_mxfp4(x + "down_proj", E, H, F);
        } else {
            const std::vector<float> t = src.rd.read(x + "gate_up_proj", {E, H, 2 * F});  // [E, H, 2F]
            gu.resize(E * 2 * F * H);
            for (std::size_t e = 0; e < E; ++e)
                for (std::size_t h = 0; h < H; ++h)
                    for (std::size_t j = 0; j < 2 * F; ++j) gu[(e * 2 * F + j) * H + h] = t[(e * H + h) * 2 * F + j];
            const std::vector<float> d = src.rd.read(x + "down_proj", {E, F, H});  // [E, F, H]
            down.resize(E * H * F);
            for (std::size_t e = 0; e < E; ++e)
                for (std::size_t f = 0; f < F; ++f)
                    for (std::size_t h = 0; h < H; ++h) down[(e * H + h) * F + f] = d[(e * F + f) * H + h];
        }
        // Interleaved: gate = even outputs, up = odd.
        w.w1.resize(E * F * H);
        w.w3.resize(E * F * H);
        for (std::size_t e = 0; e < E; ++e)
            for (std::size_t f = 0; f < F; ++f)
                for (std::size_t h = 0; h < H; ++h) {
                    w.w1[(e * F + f) * H + h] = gu[(e * 2 * F + 2 * f) * H + h];
                    w.w3[(e * F + f) * H + h] = gu[(e * 2 * F + 2 * f + 1) * H + h];
                }
        w.w2 = std::move(down);
        return false;
    }
    template <class Src>
    static void gguf_router(const Src&, std::size_t k, block_spec& s) { s.router = presets::gpt_oss(k); }
    /// The expert biases and the clamped SwiGLU.
    template <class Src>
    static void gguf_extras(const Src& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::uint64_t E = s.num_experts, H = s.hidden, F = s.ffn;
        s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = value<float>(src, "swiglu_clamp", 7.0f);
        if (src.rd.has(src.prefix + "ffn_gate_up_exps.bias")) {  // fused: each expert's gate biases, then its up biases
            const std::vector<float> gu = src.rd.read(src.prefix + "ffn_gate_up_exps.bias", {2 * F, E});
            w.b1.resize(E * F);
            w.b3.resize(E * F);
            for (std::size_t e = 0; e < E; ++e)
                for (std::size_t i = 0; i < F; ++i) {
                    w.b1[e * F + i] = gu[e * 2 * F + i];
                    w.b3[e * F + i] = gu[e * 2 * F + F + i];
                }
        } else {
            w.b1 = src.rd.read(src.prefix + "ffn_gate_exps.bias", {F, E});
            w.b3 = src.rd.read(src.prefix + "ffn_up_exps.bias", {F, E});
        }
        w.b2 = src.rd.read(src.prefix + "ffn_down_exps.bias", {H, E});
    }
};

}  // namespace moe::models::families
