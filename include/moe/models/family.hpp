/// @file models/family.hpp
/// The readers the family recipes (models/recipe.hpp, models/families/) load with: config.json
/// keys, checkpoint tensors with shape checks and float conversion, GGUF tensors and keys, and
/// the sources (`hf_source`, `gguf_source`) a recipe's loader templates are instantiated on.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../block.hpp"
#include "../config.hpp"
#include "../io/gguf.hpp"
#include "../io/safetensors.hpp"
#include "../kernels/formats.hpp"
#include "recipe.hpp"

namespace moe::models {

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

    /// E matrices [rows, cols] stored as MXFP4 `<n>_blocks` [E, rows, cols/32, 16] and
    /// `<n>_scales` [E, rows, cols/32] (U8, GPT-OSS's checkpoints), as float.
    std::vector<float> read_mxfp4(const std::string& n, std::size_t E, std::size_t rows, std::size_t cols) const {
        std::vector<float> out(E * rows * cols);
        const io::tensor_view bl = view(n + "_blocks", {E, rows, cols / 32, 16});
        const io::tensor_view sc = view(n + "_scales", {E, rows, cols / 32});
        if (bl.type != io::dtype::u8 || sc.type != io::dtype::u8)
            MOE_THROW("moe.models.load", ck.dir(), ": '", n, "_blocks' / '_scales' must be U8");
        for (std::size_t e = 0; e < E; ++e) {
            kernels::formats::quant_view q{rows, cols, {}, bl.data + e * rows * cols / 2, rows * cols / 2,
                                           sc.data + e * rows * cols / 32, rows * cols / 32};
            kernels::formats::mxfp4::validate(q);
            kernels::formats::mxfp4::dequantize(q, out.data() + e * rows * cols);
        }
        return out;
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

namespace detail {

/// "F32, F16, BF16, Q8_0, ... and MXFP4": the ggml types the registry's formats read.
inline std::string gguf_readable() {
    std::vector<std::string> names;
    kernels::for_each_format([&](auto tag) {
        io::ggml_type_traits tr{};
        if (kernels::format_traits<decltype(tag)>::gguf_type >= 0 &&
            io::ggml_traits(static_cast<std::uint32_t>(kernels::format_traits<decltype(tag)>::gguf_type), tr) &&
            std::find(names.begin(), names.end(), tr.name) == names.end())  // mxfp4 and mxfp4:dot read one type
            names.emplace_back(tr.name);
    });
    std::string all;
    for (std::size_t i = 0; i < names.size(); ++i) all += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return all;
}

/// `rows` x `cols` values of a GGUF tensor starting at row `row0` (cols = ne[0]) as float.
inline void gguf_rows(const io::gguf_tensor& t, std::size_t row0, std::size_t rows, std::size_t cols, float* out) {
    namespace fm = kernels::formats;
    io::ggml_type_traits tr{};
    (void)io::ggml_traits(static_cast<std::uint32_t>(t.type), tr);  // the reader accepted the type
    const std::size_t row_bytes = cols / tr.block * tr.bytes;
    const std::uint8_t* p = t.data + row0 * row_bytes;
    const fm::quant_view v{rows, cols, {}, p, rows * row_bytes, nullptr, 0};
    switch (t.type) {
        case io::ggml_type::f32:
        case io::ggml_type::f16:
        case io::ggml_type::bf16: {
            io::tensor_view tv = t.view();
            tv.data = p;
            tv.bytes = rows * row_bytes;
            tv.shape = {rows, cols};
            io::to_float(tv, out, rows * cols);
            return;
        }
        default: break;
    }
    bool done = false;
    kernels::for_each_format([&](auto tag) {  // the formats that read a ggml type (the registry)
        using W = decltype(tag);
        using ft = kernels::format_traits<W>;
        if constexpr (!kernels::is_weight_type_v<W> && ft::gguf_type >= 0) {
            if (done || static_cast<int>(t.type) != ft::gguf_type) return;
            if constexpr (ft::gguf_in_place) {
                W::validate(v);
                W::dequantize(v, out);
            } else {
                W::dequantize_ggml(p, rows, cols, out, "tensor '" + t.name + "'");
            }
            done = true;
        }
    });
    if (!done) MOE_THROW("moe.models.load", "tensor '", t.name, "' is ", t.type_name(), "; moe reads ", gguf_readable());
}

struct gguf_reader {
    const io::gguf_file& f;
    [[nodiscard]] bool has(const std::string& n) const { return f.contains(n); }
    /// The tensor, its ne checked as llama.cpp checks it: equal but for trailing 1s (current
    /// converters write Qwen2-MoE's shared-expert gate as [H, 1] where older ones wrote [H]).
    const io::gguf_tensor& tensor(const std::string& n, const std::vector<std::uint64_t>& ne) const {
        const io::gguf_tensor& t = f.tensor(n);
        auto trimmed = [](std::vector<std::uint64_t> v) {
            while (!v.empty() && v.back() == 1) v.pop_back();
            return v;
        };
        if (trimmed(t.ne) != trimmed(ne)) {
            std::vector<std::size_t> a(t.ne.begin(), t.ne.end()), b(ne.begin(), ne.end());
            MOE_THROW("moe.models.load", f.path(), ": tensor '", n, "' has ne ", io::shape_string(a), ", expected ", io::shape_string(b));
        }
        return t;
    }
    /// The whole tensor as float, row-major with ne[0] contiguous.
    std::vector<float> read(const std::string& n, const std::vector<std::uint64_t>& ne) const {
        const io::gguf_tensor& t = tensor(n, ne);
        std::size_t numel = 1;
        for (auto d : ne) numel *= static_cast<std::size_t>(d);
        std::vector<float> v(numel);
        gguf_rows(t, 0, numel / ne[0], static_cast<std::size_t>(ne[0]), v.data());
        return v;
    }
};

}  // namespace detail

/// What an HF recipe reads: the checkpoint, its (text) config, the reader, the model_type, the
/// layer, its tensor prefix ("model.layers.{L}.") and what to load.
struct hf_source {
    const io::safetensors_checkpoint& ck;
    const nlohmann::json& config;
    const detail::reader& rd;
    std::string model_type;
    std::size_t layer = 0;
    std::string prefix;
    bool experts = true, shared = true;

    template <class T>
    [[nodiscard]] T get(const char* key, T fallback) const { return detail::cfg_get<T>(config, key, fallback); }
    template <class T>
    [[nodiscard]] T need(const char* key) const { return detail::cfg_need<T>(config, key); }

    /// The same source reading the nested object `key` of the config (DBRX's `ffn_config`);
    /// [moe.models.config] when it is absent or not an object.
    [[nodiscard]] hf_source section(const char* key) const {
        if (!config.contains(key) || !config[key].is_object())
            MOE_THROW("moe.models.config", "config.json has no object '", key, "'");
        return hf_source{ck, config[key], rd, model_type, layer, prefix, experts, shared};
    }
    /// Throws [moe.models.layer] where the layer is out of range or, per the family's config
    /// (`moe_layer` false), a dense layer.
    void check_layer(bool moe_layer) const { detail::check_layer(config, model_type, layer, moe_layer); }
    /// The routed experts stored one module each (`names`), unless `experts` is off.
    void per_expert(const expert_names& names, const block_spec& s, block_weights& w) const {
        if (experts) detail::per_expert(rd, prefix + names.module, names.gate, names.up, names.down, s, w);
    }
    /// A dense SwiGLU MLP `<path>.gate_proj/up_proj/down_proj` as the shared expert, unless
    /// `shared` is off or the spec has none.
    void shared_mlp(const std::string& path, const block_spec& s, block_weights& w) const {
        if (shared && s.shared_ffn) detail::shared_mlp(rd, path, "gate_proj", "up_proj", "down_proj", s, w);
    }
};

/// What a GGUF recipe hook reads: the file, its architecture, the layer's prefix ("blk.{L}."),
/// and the reader.
struct gguf_source {
    const io::gguf_file& f;
    std::string arch;
    std::size_t layer = 0;
    std::string prefix;
    const detail::gguf_reader& rd;
    [[nodiscard]] std::string key(const char* k) const { return arch + "." + k; }
    /// The architecture's key `<arch>.<k>`, or `fallback`.
    template <class T>
    [[nodiscard]] T get(const char* k, T fallback) const { return f.get_or<T>(key(k), fallback); }
};

namespace detail {
template <class F, class = void>
struct has_gguf_router : std::false_type {};
template <class F>
struct has_gguf_router<F, std::void_t<decltype(F::gguf_router(std::declval<const gguf_source&>(), std::size_t{},
                                                                std::declval<block_spec&>()))>> : std::true_type {};
template <class F, class = void>
struct has_gguf_extras : std::false_type {};
template <class F>
struct has_gguf_extras<F, std::void_t<decltype(F::gguf_extras(std::declval<const gguf_source&>(), std::declval<loaded_block&>()))>>
    : std::true_type {};
}  // namespace detail

}  // namespace moe::models
