/// @file models/families/gpt_oss.hpp
/// GPT-OSS: a router linear with bias, softmax over the top-k logits (`presets::gpt_oss`);
/// experts with biases and the clamped SwiGLU (`swiglu_oai`, `swiglu_limit`), stored fused and
/// interleaved (`gate_up_proj` [E, H, 2F]: gate = even outputs, up = odd) in bf16, or as MXFP4
/// `_blocks` / `_scales` (the released checkpoints). GGUF: llama.cpp's `gpt-oss`.
#pragma once

#include "../family.hpp"

namespace moe::models::families {

struct gpt_oss {
    static constexpr std::array<const char*, 1> hf_types = {"gpt_oss"};
    static constexpr std::array<const char*, 1> gguf_archs = {"gpt-oss"};

    static bool load_hf(const hf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::size_t H = s.hidden;
        s.num_experts = src.need<std::size_t>("num_local_experts");
        s.ffn = src.need<std::size_t>("intermediate_size");
        const auto k = src.get<std::size_t>("num_experts_per_tok", src.get<std::size_t>("experts_per_token", 4));
        detail::check_layer(src.config, src.model_type, src.layer, true);
        s.router = presets::gpt_oss(k);
        s.router_bias = s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = src.get<float>("swiglu_limit", 7.0f);
        const std::size_t E = s.num_experts, F = s.ffn;
        const std::string p = src.prefix + "mlp.";
        w.router_w = src.rd.read(p + "router.weight", {E, H});
        w.router_b = src.rd.read(p + "router.bias", {E});
        const std::string x = p + "experts.";
        if (!src.experts) {
            s.validate();
            return true;  // validated here: the routed experts' biases are not loaded
        }
        std::vector<float> gu, down;  // [E, 2F, H] and [E, H, F] (output-major, as MXFP4 stores them)
        if (src.rd.has(x + "gate_up_proj_blocks")) {
            auto mx = [&](const std::string& n, std::size_t rows, std::size_t cols) {
                std::vector<float> out(E * rows * cols);
                const io::tensor_view bl = src.rd.view(n + "_blocks", {E, rows, cols / 32, 16});
                const io::tensor_view sc = src.rd.view(n + "_scales", {E, rows, cols / 32});
                if (bl.type != io::dtype::u8 || sc.type != io::dtype::u8)
                    MOE_THROW("moe.models.load", src.ck.dir(), ": '", n, "_blocks' / '_scales' must be U8");
                for (std::size_t e = 0; e < E; ++e) {
                    kernels::formats::quant_view q{rows, cols, {}, bl.data + e * rows * cols / 2, rows * cols / 2,
                                                   sc.data + e * rows * cols / 32, rows * cols / 32};
                    kernels::formats::mxfp4::validate(q);
                    kernels::formats::mxfp4::dequantize(q, out.data() + e * rows * cols);
                }
                return out;
            };
            gu = mx(x + "gate_up_proj", 2 * F, H);
            down = mx(x + "down_proj", H, F);
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
        const std::vector<float> gb = src.rd.read(x + "gate_up_proj_bias", {E, 2 * F});
        w.b1.resize(E * F);
        w.b3.resize(E * F);
        for (std::size_t i = 0; i < E * F; ++i) {
            w.b1[i] = gb[2 * i];
            w.b3[i] = gb[2 * i + 1];
        }
        w.b2 = src.rd.read(x + "down_proj_bias", {E, H});
        return false;
    }
    static bool gguf_norm_default(const std::string&) { return false; }
    static unsigned gguf_gating_default(const std::string&) { return 1; }
    static void gguf_router(const gguf_source&, std::size_t k, block_spec& s) { s.router = presets::gpt_oss(k); }
    /// The expert biases and the clamped SwiGLU.
    static void gguf_extras(const gguf_source& src, loaded_block& b) {
        block_spec& s = b.spec;
        block_weights& w = b.weights;
        const std::uint64_t E = s.num_experts, H = s.hidden, F = s.ffn;
        s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = src.f.get_or<float>(src.key("swiglu_clamp"), 7.0f);
        w.b1 = src.rd.read(src.prefix + "ffn_gate_exps.bias", {F, E});
        w.b3 = src.rd.read(src.prefix + "ffn_up_exps.bias", {F, E});
        w.b2 = src.rd.read(src.prefix + "ffn_down_exps.bias", {H, E});
    }
};

}  // namespace moe::models::families
