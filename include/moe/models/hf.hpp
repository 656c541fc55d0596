/// @file models/hf.hpp
/// Load the MoE block of layer L from a Hugging Face checkpoint folder (`config.json` + safetensors
/// shards, see io/safetensors.hpp): the family from `model_type`, its router recipe and block
/// structure from the config, its tensors by the names published on the Hub, read zero-copy
/// from the mapping and converted to float32 (bf16 / f16 exactly; FP8 E4M3 with its
/// `weight_scale_inv` 128 x 128 block scales and GPT-OSS's MXFP4 `_blocks` / `_scales` through
/// moe's format dequantizers). Only layer L's tensors are touched.
///
/// Families (model_type): mixtral, minimax_m2, qwen2_moe, qwen3_moe, olmoe, deepseek_v2,
/// deepseek_v3, kimi_k2, glm4_moe, gpt_oss, llama4 / llama4_text, granitemoe, granitemoeshared.
/// docs/models.md lists each family's recipe, source file and tensor names.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "../config.hpp"
#include "../io/safetensors.hpp"
#include "../kernels/formats/fp8.hpp"
#include "../kernels/formats/mxfp4.hpp"
#include "../kernels/quant_ffn.hpp"
#include "../presets.hpp"
#include "../block.hpp"

namespace moe::models {

/// A block as loaded: its spec and float32 weights.
struct loaded_block {
    block_spec spec;
    block_weights weights;
};

namespace detail {

inline const nlohmann::json& text_config(const nlohmann::json& c) {
    return c.contains("text_config") && c["text_config"].is_object() ? c["text_config"] : c;
}

template <class T>
T cfg_get(const nlohmann::json& c, const char* key, T fallback) {
    if (!c.contains(key) || c[key].is_null()) return fallback;
#if MOE_HAS_EXCEPTIONS
    try {
        return c[key].get<T>();
    } catch (const nlohmann::json::exception&) {
        MOE_THROW("moe.models.config", "config.json: '", key, "' is ", c[key].dump(), ", not the kind expected");
    }
#else
    return c[key].get<T>();  // without exceptions nlohmann::json aborts on a value of the wrong kind
#endif
}

template <class T>
T cfg_need(const nlohmann::json& c, const char* key) {
    if (!c.contains(key) || c[key].is_null()) MOE_THROW("moe.models.config", "config.json has no '", key, "'");
    return cfg_get<T>(c, key, T{});
}

/// Reads tensors of one checkpoint with shape checks and float conversion.
struct reader {
    const io::safetensors_checkpoint& ck;

    [[nodiscard]] bool has(const std::string& n) const { return ck.contains(n); }

    io::tensor_view view(const std::string& n, const std::vector<std::size_t>& shape) const {
        const io::tensor_view t = ck.tensor(n);
        if (t.shape != shape)
            MOE_THROW("moe.models.load", ck.dir(), ": tensor '", n, "' is ", io::shape_string(t.shape), ", expected ", io::shape_string(shape));
        return t;
    }

    /// A float tensor, or an FP8 E4M3 weight with its `_scale_inv` (DeepSeek-V3 layout).
    void read(const std::string& n, const std::vector<std::size_t>& shape, float* out) const {
        const io::tensor_view t = view(n, shape);
        if (t.type == io::dtype::f8_e4m3 && shape.size() == 2) {
            const std::string sn = n + "_scale_inv";
            const auto tiles = [](std::size_t x) { return (x + 127) / 128; };
            const io::tensor_view s = view(sn, {tiles(shape[0]), tiles(shape[1])});
            if (s.type != io::dtype::f32)
                MOE_THROW("moe.models.load", ck.dir(), ": tensor '", sn, "' is ", io::dtype_name(s.type), ", expected F32");
            kernels::formats::quant_view q{shape[0], shape[1], {}, t.data, t.bytes, s.data, s.bytes};
            kernels::formats::fp8::validate(q);
            kernels::formats::fp8::dequantize(q, out);
            return;
        }
        io::to_float(t, out, t.numel());
    }
    std::vector<float> read(const std::string& n, const std::vector<std::size_t>& shape) const {
        std::size_t numel = 1;
        for (std::size_t d : shape) numel *= d;
        std::vector<float> v(numel);
        read(n, shape, v.data());
        return v;
    }
};

/// Experts stored one module each: `<p>.{e}.<g>.weight` [F, H], `<u>` [F, H], `<d>` [H, F].
inline void per_expert(const reader& rd, const std::string& p, const char* g, const char* u, const char* d, const block_spec& s,
                       block_weights& w) {
    const std::size_t E = s.num_experts, H = s.hidden, F = s.ffn;
    w.w1.resize(E * F * H);
    w.w3.resize(E * F * H);
    w.w2.resize(E * H * F);
    for (std::size_t e = 0; e < E; ++e) {
        const std::string q = p + "." + std::to_string(e) + ".";
        rd.read(q + g + ".weight", {F, H}, w.w1.data() + e * F * H);
        rd.read(q + u + ".weight", {F, H}, w.w3.data() + e * F * H);
        rd.read(q + d + ".weight", {H, F}, w.w2.data() + e * H * F);
    }
}

/// A dense SwiGLU MLP `<p>.<g>/<u>/<d>.weight` as the shared expert (ffn Fs).
inline void shared_mlp(const reader& rd, const std::string& p, const char* g, const char* u, const char* d, const block_spec& s,
                       block_weights& w) {
    const std::size_t H = s.hidden, Fs = s.shared_ffn;
    w.s1 = rd.read(p + "." + g + ".weight", {Fs, H});
    w.s3 = rd.read(p + "." + u + ".weight", {Fs, H});
    w.s2 = rd.read(p + "." + d + ".weight", {H, Fs});
}

/// Whether layer L is an MoE layer, per the family's config, or [moe.models.layer].
inline void check_layer(const nlohmann::json& c, const std::string& family, std::size_t L, bool moe_layer) {
    const auto n = cfg_get<std::size_t>(c, "num_hidden_layers", 0);
    if (n && L >= n) MOE_THROW("moe.models.layer", family, ": layer ", L, " out of range (", n, " layers)");
    if (!moe_layer) MOE_THROW("moe.models.layer", family, ": layer ", L, " is a dense layer, not an MoE block");
}

}  // namespace detail

/// The model families `load_block` understands (config.json model_type).
inline constexpr const char* hf_families[] = {"mixtral",  "minimax_m2",  "qwen2_moe", "qwen3_moe", "olmoe",
                                              "deepseek_v2", "deepseek_v3", "kimi_k2",  "glm4_moe",  "gpt_oss",
                                              "llama4",   "llama4_text", "granitemoe", "granitemoeshared"};

/// Layer L's MoE block of the checkpoint. Throws [moe.models.config] (unknown family, missing
/// key), [moe.models.layer] (out of range, a dense layer), [moe.models.load] (missing tensor,
/// wrong shape, bad FP8 / MXFP4 bytes) and the readers' [moe.io.*] errors. `experts` false
/// skips the routed experts (a routing-only load, or experts packed by `pack_hf_experts`),
/// `shared` false the shared expert.
[[nodiscard]] inline loaded_block load_block(const io::safetensors_checkpoint& ck, std::size_t L, bool experts = true,
                                             bool shared = true) {
    using detail::cfg_get;
    using detail::cfg_need;
    const nlohmann::json& root = ck.config();
    const std::string family = cfg_get<std::string>(root, "model_type", "");
    const nlohmann::json& c = detail::text_config(root);
    const detail::reader rd{ck};
    loaded_block b;
    block_spec& s = b.spec;
    block_weights& w = b.weights;
    s.family = family;
    s.hidden = cfg_need<std::size_t>(c, "hidden_size");
    const std::size_t H = s.hidden;
    const std::string layer = "model.layers." + std::to_string(L) + ".";

    if (family == "mixtral" || family == "minimax_m2") {
        s.num_experts = cfg_need<std::size_t>(c, "num_local_experts");
        s.ffn = cfg_need<std::size_t>(c, "intermediate_size");
        const auto k = cfg_need<std::size_t>(c, "num_experts_per_tok");
        detail::check_layer(c, family, L, true);
        const std::string p = layer + "block_sparse_moe.";
        s.router = family == "mixtral" ? presets::mixtral(k) : presets::minimax_m2(k);
        w.router_w = rd.read(p + "gate.weight", {s.num_experts, H});
        if (family == "minimax_m2") {
            s.selection_bias = true;
            w.selection_bias = rd.read(p + "e_score_correction_bias", {s.num_experts});
        }
        if (experts) detail::per_expert(rd, p + "experts", "w1", "w3", "w2", s, w);
    } else if (family == "qwen2_moe" || family == "qwen3_moe" || family == "olmoe") {
        s.num_experts = cfg_need<std::size_t>(c, "num_experts");
        s.ffn = family == "olmoe" ? cfg_need<std::size_t>(c, "intermediate_size") : cfg_need<std::size_t>(c, "moe_intermediate_size");
        const auto k = cfg_need<std::size_t>(c, "num_experts_per_tok");
        const bool norm = cfg_get<bool>(c, "norm_topk_prob", family == "qwen3_moe");
        bool sparse = true;
        if (family != "olmoe") {
            const auto step = cfg_get<std::size_t>(c, "decoder_sparse_step", 1);
            const auto dense = cfg_get<std::vector<std::size_t>>(c, "mlp_only_layers", {});
            sparse = step > 0 && (L + 1) % step == 0 && std::find(dense.begin(), dense.end(), L) == dense.end();
        }
        detail::check_layer(c, family, L, sparse);
        s.router = presets::qwen2_moe(k, norm);
        const std::string p = layer + "mlp.";
        w.router_w = rd.read(p + "gate.weight", {s.num_experts, H});
        if (experts) detail::per_expert(rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        if (family == "qwen2_moe") {
            s.shared_ffn = cfg_get<std::size_t>(c, "shared_expert_intermediate_size", 0);
            if (s.shared_ffn) s.shared = shared_gate::sigmoid;
            if (s.shared_ffn && shared) {
                detail::shared_mlp(rd, p + "shared_expert", "gate_proj", "up_proj", "down_proj", s, w);
                w.s_gate = rd.read(p + "shared_expert_gate.weight", {1, H});
            }
        }
    } else if (family == "deepseek_v2" || family == "deepseek_v3" || family == "kimi_k2" || family == "glm4_moe") {
        s.num_experts = cfg_need<std::size_t>(c, "n_routed_experts");
        s.ffn = cfg_need<std::size_t>(c, "moe_intermediate_size");
        const auto k = cfg_need<std::size_t>(c, "num_experts_per_tok");
        const auto first_dense = cfg_get<std::size_t>(c, "first_k_dense_replace", 0);
        const auto freq = cfg_get<std::size_t>(c, "moe_layer_freq", 1);
        detail::check_layer(c, family, L, L >= first_dense && freq > 0 && L % freq == 0);
        const auto n_group = cfg_get<std::size_t>(c, "n_group", 1), topk_group = cfg_get<std::size_t>(c, "topk_group", 1);
        const bool norm = cfg_get<bool>(c, "norm_topk_prob", family != "deepseek_v2");
        const float scale = cfg_get<float>(c, "routed_scaling_factor", 1.0f);
        const std::string scoring = cfg_get<std::string>(c, "scoring_func", family == "deepseek_v2" ? "softmax" : "sigmoid");
        if (scoring == "softmax") {
            const std::string method = cfg_get<std::string>(c, "topk_method", "greedy");
            s.router = presets::deepseek_v2(k, method == "group_limited_greedy" ? n_group : 1, topk_group, scale, norm);
        } else if (scoring == "sigmoid") {
            s.router = presets::deepseek_v3(k, n_group, topk_group, scale, norm);
        } else {
            MOE_THROW("moe.models.config", family, ": scoring_func '", scoring, "' (expected softmax or sigmoid)");
        }
        const std::string p = layer + "mlp.";
        w.router_w = rd.read(p + "gate.weight", {s.num_experts, H});
        if (rd.has(p + "gate.e_score_correction_bias")) {
            s.selection_bias = true;
            w.selection_bias = rd.read(p + "gate.e_score_correction_bias", {s.num_experts});
        }
        if (experts) detail::per_expert(rd, p + "experts", "gate_proj", "up_proj", "down_proj", s, w);
        s.shared_ffn = s.ffn * cfg_get<std::size_t>(c, "n_shared_experts", 0);
        if (s.shared_ffn && shared) detail::shared_mlp(rd, p + "shared_experts", "gate_proj", "up_proj", "down_proj", s, w);
    } else if (family == "gpt_oss") {
        s.num_experts = cfg_need<std::size_t>(c, "num_local_experts");
        s.ffn = cfg_need<std::size_t>(c, "intermediate_size");
        const auto k = cfg_get<std::size_t>(c, "num_experts_per_tok", cfg_get<std::size_t>(c, "experts_per_token", 4));
        detail::check_layer(c, family, L, true);
        s.router = presets::gpt_oss(k);
        s.router_bias = s.expert_bias = true;
        s.activation = kernels::ffn_activation::swiglu_oai;
        s.swiglu_limit = cfg_get<float>(c, "swiglu_limit", 7.0f);
        const std::size_t E = s.num_experts, F = s.ffn;
        const std::string p = layer + "mlp.";
        w.router_w = rd.read(p + "router.weight", {E, H});
        w.router_b = rd.read(p + "router.bias", {E});
        const std::string x = p + "experts.";
        if (!experts) {
            s.validate();
            return b;
        }
        std::vector<float> gu, down;  // [E, 2F, H] and [E, H, F] (output-major, as MXFP4 stores them)
        if (rd.has(x + "gate_up_proj_blocks")) {
            auto mx = [&](const std::string& n, std::size_t rows, std::size_t cols) {
                std::vector<float> out(E * rows * cols);
                const io::tensor_view bl = rd.view(n + "_blocks", {E, rows, cols / 32, 16});
                const io::tensor_view sc = rd.view(n + "_scales", {E, rows, cols / 32});
                if (bl.type != io::dtype::u8 || sc.type != io::dtype::u8)
                    MOE_THROW("moe.models.load", ck.dir(), ": '", n, "_blocks' / '_scales' must be U8");
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
            const std::vector<float> t = rd.read(x + "gate_up_proj", {E, H, 2 * F});  // [E, H, 2F]
            gu.resize(E * 2 * F * H);
            for (std::size_t e = 0; e < E; ++e)
                for (std::size_t h = 0; h < H; ++h)
                    for (std::size_t j = 0; j < 2 * F; ++j) gu[(e * 2 * F + j) * H + h] = t[(e * H + h) * 2 * F + j];
            const std::vector<float> d = rd.read(x + "down_proj", {E, F, H});  // [E, F, H]
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
        const std::vector<float> gb = rd.read(x + "gate_up_proj_bias", {E, 2 * F});
        w.b1.resize(E * F);
        w.b3.resize(E * F);
        for (std::size_t i = 0; i < E * F; ++i) {
            w.b1[i] = gb[2 * i];
            w.b3[i] = gb[2 * i + 1];
        }
        w.b2 = rd.read(x + "down_proj_bias", {E, H});
    } else if (family == "llama4" || family == "llama4_text") {
        s.num_experts = cfg_need<std::size_t>(c, "num_local_experts");
        s.ffn = cfg_need<std::size_t>(c, "intermediate_size");
        const auto k = cfg_get<std::size_t>(c, "num_experts_per_tok", 1);
        const auto step = cfg_get<std::size_t>(c, "interleave_moe_layer_step", 1);
        detail::check_layer(c, family, L, step > 0 && (L + 1) % step == 0);
        s.router = presets::llama4(k);
        s.weight_on_input = true;
        s.shared_ffn = s.ffn;
        const std::size_t E = s.num_experts, F = s.ffn;
        std::string p = "language_model." + layer + "feed_forward.";
        if (!rd.has(p + "router.weight")) p = layer + "feed_forward.";
        w.router_w = rd.read(p + "router.weight", {E, H});
        if (shared) detail::shared_mlp(rd, p + "shared_expert", "gate_proj", "up_proj", "down_proj", s, w);
        if (!experts) {
            s.validate();
            w.check(s, false, shared);
            return b;
        }
        const std::vector<float> gu = rd.read(p + "experts.gate_up_proj", {E, H, 2 * F});  // gate = first F columns
        const std::vector<float> d = rd.read(p + "experts.down_proj", {E, F, H});
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
    } else if (family == "granitemoe" || family == "granitemoeshared") {
        s.num_experts = cfg_need<std::size_t>(c, "num_local_experts");
        s.ffn = cfg_need<std::size_t>(c, "intermediate_size");
        const auto k = cfg_need<std::size_t>(c, "num_experts_per_tok");
        detail::check_layer(c, family, L, true);
        s.router = presets::granite_moe(k);
        const std::size_t E = s.num_experts, F = s.ffn;
        const std::string p = layer + "block_sparse_moe.";
        w.router_w = rd.read(p + "router.layer.weight", {E, H});
        if (family == "granitemoeshared") {
            s.shared_ffn = cfg_get<std::size_t>(c, "shared_intermediate_size", 0);
            if (s.shared_ffn && shared) {
                const std::size_t Fs = s.shared_ffn;
                const std::vector<float> si = rd.read(layer + "shared_mlp.input_linear.weight", {2 * Fs, H});
                w.s1.assign(si.begin(), si.begin() + static_cast<std::ptrdiff_t>(Fs * H));
                w.s3.assign(si.begin() + static_cast<std::ptrdiff_t>(Fs * H), si.end());
                w.s2 = rd.read(layer + "shared_mlp.output_linear.weight", {H, Fs});
            }
        }
        if (!experts) {
            s.validate();
            w.check(s, false, shared);
            return b;
        }
        const std::vector<float> in = rd.read(p + "input_linear.weight", {E, 2 * F, H});  // gate = first F rows
        w.w1.assign(E * F * H, 0.0f);
        w.w3.assign(E * F * H, 0.0f);
        for (std::size_t e = 0; e < E; ++e) {
            std::copy(in.begin() + static_cast<std::ptrdiff_t>(e * 2 * F * H), in.begin() + static_cast<std::ptrdiff_t>((e * 2 * F + F) * H),
                      w.w1.begin() + static_cast<std::ptrdiff_t>(e * F * H));
            std::copy(in.begin() + static_cast<std::ptrdiff_t>((e * 2 * F + F) * H), in.begin() + static_cast<std::ptrdiff_t>((e + 1) * 2 * F * H),
                      w.w3.begin() + static_cast<std::ptrdiff_t>(e * F * H));
        }
        w.w2 = rd.read(p + "output_linear.weight", {E, H, F});
    } else {
        std::string all;
        for (const char* f : hf_families) all += (all.empty() ? "" : ", ") + std::string(f);
        MOE_THROW("moe.models.config", ck.dir(), ": model_type '", family, "' is not a family moe loads (", all, ")");
    }
    s.validate();
    w.check(s, experts, shared);
    return b;
}

/// Layer L's routed experts packed in format Fmt straight from the checkpoint's bytes, for
/// `moe::block<Arch, Fmt>(spec, weights, packed)` with `weights = load_block(ck, L,
/// /*experts=*/false).weights` (router and shared expert, no float copy of the routed
/// experts). Today: `kernels::formats::fp8` from FP8 E4M3 experts with their
/// `weight_scale_inv` (DeepSeek-V3 / R1, Kimi-K2 and GLM FP8 checkpoints), the bytes validated
/// and packed without a float copy. Throws [moe.models.format] when the experts are not
/// stored that way, and the loader's errors.
template <class Fmt>
[[nodiscard]] kernels::packed_quant_experts<Fmt> pack_hf_experts(const io::safetensors_checkpoint& ck, std::size_t L,
                                                                 const kernels::pack_options& o = {}) {
    static_assert(std::is_same<Fmt, kernels::formats::fp8>::value, "pack_hf_experts: fp8 checkpoints only, for now");
    const loaded_block b = load_block(ck, L, /*experts=*/false, /*shared=*/false);
    const block_spec& s = b.spec;
    const std::string f = s.family;
    std::string prefix, g = "gate_proj", u = "up_proj", d = "down_proj";
    if (f == "mixtral" || f == "minimax_m2") {
        prefix = "model.layers." + std::to_string(L) + ".block_sparse_moe.experts.";
        g = "w1", u = "w3", d = "w2";
    } else if (f == "qwen2_moe" || f == "qwen3_moe" || f == "olmoe" || f == "deepseek_v2" || f == "deepseek_v3" || f == "kimi_k2" ||
               f == "glm4_moe") {
        prefix = "model.layers." + std::to_string(L) + ".mlp.experts.";
    } else {
        MOE_THROW("moe.models.format", ck.dir(), ": ", f, " does not store its experts one module each; pack_hf_experts reads those");
    }
    const std::size_t E = s.num_experts, H = s.hidden, F = s.ffn;
    std::vector<kernels::formats::quant_view> v[3];
    const detail::reader rd{ck};
    for (std::size_t e = 0; e < E; ++e) {
        const std::string q = prefix + std::to_string(e) + ".";
        const char* names[3] = {g.c_str(), u.c_str(), d.c_str()};
        for (int m = 0; m < 3; ++m) {
            const std::size_t rows = m == 2 ? H : F, cols = m == 2 ? F : H;
            const std::string n = q + names[m] + ".weight";
            const io::tensor_view t = rd.view(n, {rows, cols});
            if (t.type != io::dtype::f8_e4m3)
                MOE_THROW("moe.models.format", ck.dir(), ": tensor '", n, "' is ", io::dtype_name(t.type), ", not F8_E4M3 (fp8)");
            const io::tensor_view sc = rd.view(n + "_scale_inv", {(rows + 127) / 128, (cols + 127) / 128});
            if (sc.type != io::dtype::f32)
                MOE_THROW("moe.models.load", ck.dir(), ": tensor '", n, "_scale_inv' is ", io::dtype_name(sc.type), ", expected F32");
            v[m].push_back({rows, cols, {}, t.data, t.bytes, sc.data, sc.bytes});
        }
    }
    return kernels::pack_quant_experts<Fmt>(v[0].data(), v[1].data(), v[2].data(), E, H, F, o);
}

}  // namespace moe::models
